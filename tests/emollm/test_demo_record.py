"""``emollm demo record``: the demo report says with which seeds and library versions it was made, and
fingerprints each step so two runs can be compared step by step (issue 29)."""

from __future__ import annotations

import json

import numpy as np

from emollm.apps.demo import main
from emollm.apps.demo_data import _decoded_fingerprint


def _fake_demo(root, *, clip_bytes=b"clip"):
    (root / "data" / "clips").mkdir(parents=True)
    (root / "data" / "manifest.json").write_text(json.dumps({"settings": {"seed": 0}}))
    (root / "data" / "clips" / "demo_000.mp4").write_bytes(clip_bytes)
    (root / "data" / "labels_test.txt").write_text("demo_000 10 happy -10\n")
    for enc in ("whisper", "fer"):
        (root / "features" / enc).mkdir(parents=True)
        np.save(root / "features" / enc / "demo_000.npy", np.zeros(4, np.float32))
    (root / "pretrain" / "final").mkdir(parents=True)
    (root / "pretrain" / "final" / "run_config.json").write_text(json.dumps({"train": {"seed": 0}}))
    (root / "eval" / "baseline").mkdir(parents=True)
    (root / "eval" / "baseline" / "baseline.json").write_text(
        json.dumps({"seed": 0, "solver": {"init": "zeros"}, "near_ties": {"n": 2, "names": ["a", "b"]}})
    )
    (root / "eval" / "baseline" / "predictions.csv").write_text("name,pred\ndemo_000,happy\n")
    (root / "report").mkdir()
    (root / "report" / "compare.md").write_text("# Side by side\n\n| model |\n")
    (root / "report" / "compare.json").write_text(json.dumps({"seed": 0, "n_bootstrap": 1000}))
    return root


def test_record_names_seeds_versions_and_fingerprints(tmp_path, capsys):
    a = _fake_demo(tmp_path / "a")
    b = _fake_demo(tmp_path / "b", clip_bytes=b"another clip")
    for demo in (a, b, a):  # twice on a: the section is replaced, not appended again
        assert main(["record", str(demo)]) == 0
    rec_a = json.loads((a / "report" / "reproducibility.json").read_text())
    rec_b = json.loads((b / "report" / "reproducibility.json").read_text())
    steps = rec_a["steps"]
    assert steps["data"]["seed"] == 0 and steps["pretrain"]["seed"] == 0 and steps["report"]["bootstrap_seed"] == 0
    assert steps["fusion baseline"]["solver"] == {"init": "zeros"}
    assert rec_a["versions"]["torch"] and rec_a["versions"]["python"]
    # the step that differs is the first whose fingerprint differs
    assert steps["data"]["sha256"]["clips"] != rec_b["steps"]["data"]["sha256"]["clips"]
    assert steps["features"] == rec_b["steps"]["features"]
    # the clips' pixels are fingerprinted as decoded; these fakes do not decode: recorded by name, not a crash
    assert len(steps["data"]["pixels_sha256"]) == 16
    md = (a / "report" / "compare.md").read_text()
    assert md.count("## Reproducibility") == 1 and "2 near-tie prediction(s)" in md and "torch " in md
    assert main(["record", str(tmp_path / "nothing")]) == 2
    assert "not a make demo folder" in capsys.readouterr().err


def test_demo_clips_are_the_same_bits_whatever_cpus_the_encoder_sees(tmp_path):
    """x264 takes its thread count from the CPUs it sees, and its output depends on it: the same clip differed
    between a 1- and a 2-CPU run. The fixtures encode on one thread."""
    import hashlib
    import os
    import subprocess
    import sys

    cpus = sorted(os.sched_getaffinity(0))
    code = (
        "import os, sys; os.sched_setaffinity(0, {cpus}); "
        "from emollm.media.fixtures import make_face_clip; "
        "make_face_clip(sys.argv[1], 'grace_hopper', seconds=1.0, size=(160, 120), audio=None)"
    )
    digests, pixels = [], []
    for i, use in enumerate([cpus[:1], cpus]):
        out = tmp_path / f"clip{i}.mp4"
        subprocess.run([sys.executable, "-c", code.format(cpus=set(use)), str(out)], check=True)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
        lossless = tmp_path / f"lossless{i}" / "clip.mp4"  # the demo's clips: the decoded frames are the input's
        lossless.parent.mkdir()
        subprocess.run([sys.executable, "-c", code.replace("audio=None", "audio=None, lossless=True").format(
            cpus=set(use)), str(lossless)], check=True)  # fmt: skip
        pixels.append(_decoded_fingerprint([lossless]))
    assert digests[0] == digests[1]
    assert pixels[0] == pixels[1] and pixels[0] is not None
