"""merr.review + the ``emollm merr build / review`` CLI: export -> reviewer edits -> import -> corrected labels win on
rebuild; Emotion-LLaMA label files as corrections; config errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from emollm_merr.cli import main
from emollm_merr.config import BuildConfigError, load_build_config
from emollm_merr.review import REVIEW_COLUMNS, export_review, import_review, load_corrections

from .conftest import build_dict

REPO = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, REVIEW_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


def test_cli_build_review_round_trip(clip_set, tmp_path, capsys):
    out = tmp_path / "out"
    cfg_file = tmp_path / "build.yaml"
    cfg_file.write_text(yaml.safe_dump(build_dict(clip_set, out)))
    assert main(["build", "--config", str(cfg_file), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "coarse 6, fine 5" in printed and "dropped: contradiction 1, duplicate 2" in printed

    # export: the contradictory sample first, then the least confident; the header is the documented one
    assert main(["review", "export", "--config", str(cfg_file), "--limit", "5"]) == 0
    review = out / "review" / "review.csv"
    assert review.read_text().splitlines()[0] == ",".join(REVIEW_COLUMNS)
    rows = _rows(review)
    assert len(rows) == 5 and rows[0]["name"] == "sample_04_sad"
    assert (rows[0]["pseu_emotion"], rows[0]["issue"], rows[0]["confidence"]) == (
        "sad",
        "contradiction: concludes angry",
        "0.0000",
    )
    confs = [float(r["confidence"]) for r in rows[1:]]
    assert confs == sorted(confs)

    # the reviewer relabels the sad clip and drops the surprise one
    rows[0] |= {"corrected_label": "angry", "reviewer": "alice", "reviewed_at": "2026-11-20T09:00:00+01:00"}
    extra = {"name": "sample_03_surprise", "corrected_label": "drop", "reviewer": "", "reviewed_at": ""}
    _write(review, [rows[0], extra])
    assert main(["review", "import", str(review), "--config", str(cfg_file), "--reviewer", "bob"]) == 0
    assert "imported 2 correction(s)" in capsys.readouterr().out
    corr = load_corrections(out / "review" / "corrections.json")
    assert (corr["sample_04_sad"].label, corr["sample_04_sad"].reviewer, corr["sample_04_sad"].reviewed_at) == (
        "angry",
        "alice",
        "2026-11-20T08:00:00Z",
    )
    assert corr["sample_04_sad"].previous == "sad" and corr["sample_03_surprise"].reviewer == "bob"

    # rebuild: corrected labels win, the relabelled clip gets a fresh reasoning (only that one)
    assert main(["build", "--config", str(cfg_file), "--no-progress"]) == 0
    table = capsys.readouterr().out
    reason_row = next(line.split() for line in table.splitlines() if line.startswith("reason"))
    assert reason_row[1:3] == ["1", "6"]  # the relabelled clip's new prompt; the dropped clip is not reasoned
    samples = {r["name"]: r for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}
    sad = samples["sample_04_sad"]
    assert (sad["label"], sad["label_source"], sad["in_fine"], sad["consistency"]) == (
        "angry",
        "review",
        True,
        "consistent",
    )
    assert sad["review"] == {"reviewer": "alice", "reviewed_at": "2026-11-20T08:00:00Z"}
    assert samples["sample_03_surprise"]["status"] == "dropped_by_review"
    fine = json.loads((out / "MERR_fine_grained.json").read_text())
    coarse = json.loads((out / "MERR_coarse_grained.json").read_text())
    assert fine["sample_04_sad"]["pseu_emotion"] == "angry" and "sample_03_surprise" not in coarse

    # exporting again shows the stored correction in its row
    export_review(out / "samples.jsonl", tmp_path / "again.csv", limit=100, corrections=corr)
    again = {r["name"]: r for r in _rows(tmp_path / "again.csv")}
    assert again["sample_04_sad"]["corrected_label"] == "angry" and again["sample_04_sad"]["reviewer"] == "alice"


def test_import_validation_and_el_label_files(tmp_path):
    names = ["sample_1", "00012"]
    bad_label = _write(tmp_path / "r.csv", [{"name": "sample_1", "corrected_label": "joyful"}])
    with pytest.raises(ValueError, match=r"r\.csv:2: corrected_label 'joyful' for 'sample_1' is not one of"):
        import_review(bad_label, tmp_path / "c.json", ["happy", "sad"], known_names=names)
    unknown = _write(tmp_path / "u.csv", [{"name": "sample_9", "corrected_label": "sad"}])
    with pytest.raises(ValueError, match=r"u\.csv:2: unknown sample 'sample_9'"):
        import_review(unknown, tmp_path / "c.json", ["happy", "sad"], known_names=names)
    twice = _write(tmp_path / "t.csv", [{"name": "sample_1", "corrected_label": "sad"}] * 2)
    with pytest.raises(ValueError, match=r"t\.csv:3: 'sample_1' corrected twice"):
        import_review(twice, tmp_path / "c.json", ["happy", "sad"], known_names=names)
    when = _write(tmp_path / "w.csv", [{"name": "sample_1", "corrected_label": "sad", "reviewed_at": "yesterday"}])
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        import_review(when, tmp_path / "c.json", ["happy", "sad"], known_names=names)
    assert not (tmp_path / "c.json").exists()  # nothing written on a bad file
    # Emotion-LLaMA's released files as label sources (names outside this build are skipped)
    (tmp_path / "MERR_fine_grained.json").write_text(
        json.dumps(
            {
                "00012": {
                    "AU_list": [],
                    "visual_prior_list": [],
                    "audio_prior_list": "",
                    "peak_index": "0",
                    "peak_AU_list": [],
                    "pseu_emotion": "happy",
                    "smp_reason_caption": "x",
                    "text": "",
                },
                "other": {"pseu_emotion": "sad", "smp_reason_caption": "y"},
            }
        )
    )
    assert import_review(
        tmp_path / "MERR_fine_grained.json",
        tmp_path / "c.json",
        ["happy", "sad"],
        known_names=names,
        now="2026-01-01T00:00:00Z",
    ) == (1, 1)
    (tmp_path / "list.txt").write_text("sample_1 35 sad -1.17\n00012 12 sad -10\n")
    assert import_review(tmp_path / "list.txt", tmp_path / "c.json", ["happy", "sad"], known_names=names) == (2, 2)
    stored = load_corrections(tmp_path / "c.json")
    assert stored["00012"].label == "sad" and stored["00012"].reviewer == "import:list.txt"


def test_config_errors_name_the_key(tmp_path, capsys):
    shipped = REPO / "configs" / "merr" / "build.yaml"
    text = shipped.read_text()
    assert text.startswith("# ") and "emollm merr build --config configs/merr/build.yaml" in text
    cfg = load_build_config(shipped)
    assert (cfg.describe.visual, cfg.describe.audio, cfg.reason.backbone) == ("none", "measured", "smollm2")
    with pytest.raises(BuildConfigError, match=r"reason\.max_new_token: unknown key \(did you mean 'max_new_tokens'"):
        load_build_config(shipped, ["reason.max_new_token=3"])
    with pytest.raises(BuildConfigError, match=r"filter\.dedup: expected true or false, got 'yes please'"):
        load_build_config(shipped, ["filter.dedup=yes please"])
    with pytest.raises(BuildConfigError, match=r"describe\.visual: unknown visual describer 'blip'"):
        load_build_config(shipped, ["describe.visual=blip"])
    with pytest.raises(BuildConfigError, match="inputs.video_dir: required"):
        load_build_config(None)
    with pytest.raises(BuildConfigError, match=r"au\.peak_rule: 'median' is not allowed"):
        load_build_config(shipped, ["au.peak_rule=median"])
    assert main(["build", "--config", str(shipped), "workers=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emollm merr build: error: workers: must be >= 1") and "Traceback" not in err
    assert main(["build", "--config", str(shipped), f"inputs.video_dir={tmp_path / 'none'}"]) == 2
    assert "no such folder" in capsys.readouterr().err
