"""Hostile input to the CLI surfaces of issue 29: ``analyze`` batch outputs, the corpus readers (``emollm data``) and
the fusion baselines (``emollm fusion``).

Every case: one line on stderr naming the input and the fix (no traceback), nothing lost or clobbered (the files
a refused command was pointed at are byte-for-byte unchanged), and a non-zero exit when nothing succeeded. The
refusals of ``analyze`` happen before any model is loaded, so these cases cost no inference.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from emollm.apps.analyze import main as analyze_main
from emollm.data.corpora_cli import main as data_main
from emollm.fusion.cli import main as fusion_main
from emollm.jobs.batch import BatchError, check_results_file, not_a_results_file

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt "


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _snapshot(*paths: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in paths}


# ------------------------------------------------------------------------------------------------- analyze --out


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    d = tmp_path / "clips"
    d.mkdir()
    (d / "a.txt").write_text("We won, I am so happy!\n")
    (d / "b.txt").write_text("I miss my old friends.\n")
    return d


RESULT = json.dumps({"file": "clips/a.txt", "label": "happy", "probabilities": {"happy": 1.0}, "mode": "clues"})


@pytest.mark.parametrize(
    ("make", "flags", "fragment"),
    [
        # a user's CSV was emptied with exit 0
        (lambda t: (t / "precious.csv").write_text("a,b\n1,2\n") and t / "precious.csv", [], "is not JSON"),
        # one of the inputs was erased; --overwrite never allows it
        (lambda t: t / "clips" / "b.txt", [], "is the input"),
        (lambda t: t / "clips" / "b.txt", ["--overwrite"], "even with --overwrite"),
        # JSON lines, but somebody else's
        (lambda t: (t / "other.jsonl").write_text('{"id": 1}\n') and t / "other.jsonl", [], "not an emollm analyze"),
        # our results, then a foreign line in the middle (not a torn last line)
        (
            lambda t: (t / "mixed.jsonl").write_text(f"{RESULT}\nnot json\n{RESULT}\n") and t / "mixed.jsonl",
            [],
            "line 2 is not JSON",
        ),  # fmt: skip
        # a binary file without a newline is not "a line torn by a kill"
        (
            lambda t: (t / "blob.bin").write_bytes(os.urandom(64).replace(b"\n", b"x")) and t / "blob.bin",
            [],
            "not JSON",
        ),  # fmt: skip
        (lambda t: (t / "latin1.jsonl").write_bytes(b"caf\xe9\n") and t / "latin1.jsonl", [], "not JSON"),
        (lambda t: t / "clips", [], "is a folder"),
    ],
    ids=["csv", "an-input", "an-input-overwrite", "foreign-jsonl", "foreign-line", "binary", "latin1", "folder"],
)
def test_analyze_out_refuses_to_clobber(tmp_path, clips, capsys, make, flags, fragment):
    out = make(tmp_path)
    before = _snapshot(*(p for p in [out, clips / "a.txt", clips / "b.txt"] if p.is_file()))
    assert analyze_main([str(clips), "--out", str(out), *flags]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"emollm analyze: --out {out}") and fragment in line, line
    assert _snapshot(*before) == before  # nothing clobbered


def test_analyze_out_refuses_the_list_file_a_hardlink_and_a_dangling_symlink(tmp_path, clips, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text("clips/a.txt\n")
    assert analyze_main(["--list", str(listing), "--out", str(listing)]) == 2
    assert "is the input" in _one_line(capsys.readouterr().err) and listing.read_text() == "clips/a.txt\n"
    link = tmp_path / "hard.txt"
    os.link(clips / "a.txt", link)  # another name of an input
    assert analyze_main([str(clips), "--out", str(link)]) == 2
    assert "is the input" in _one_line(capsys.readouterr().err)
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "nowhere" / "x.jsonl")
    assert analyze_main([str(clips), "--out", str(dangling)]) == 2
    assert "symlink to nothing" in _one_line(capsys.readouterr().err)


def test_analyze_out_resumes_only_its_own_records(tmp_path, clips):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    check_results_file(empty, [clips / "a.txt"])  # nothing to lose
    torn = tmp_path / "torn.jsonl"
    torn.write_text(RESULT + "\n" + RESULT[:25])  # killed while writing the second line
    assert not_a_results_file(torn) is None
    check_results_file(torn, [clips / "a.txt"])
    foreign = tmp_path / "notes.md"
    foreign.write_text("# notes\n")
    with pytest.raises(BatchError, match="pass --overwrite"):
        check_results_file(foreign, [clips / "a.txt"])
    check_results_file(foreign, [clips / "a.txt"], overwrite=True)  # asked for: allowed (the input never is)


def test_analyze_batch_and_single_file_misuse_are_one_line(tmp_path, clips, capsys):
    assert analyze_main([str(clips)]) == 2  # a folder is a batch: it needs --out
    assert "give --out RESULTS.jsonl" in _one_line(capsys.readouterr().err)
    assert analyze_main([str(clips / "a.txt"), "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "--out is for batches" in _one_line(capsys.readouterr().err)
    assert analyze_main(["--list", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "cannot read it" in _one_line(capsys.readouterr().err)
    (tmp_path / "blank.txt").write_text("# nothing\n\n")
    assert analyze_main(["--list", str(tmp_path / "blank.txt"), "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "no paths in it" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "r.jsonl").exists()


# ------------------------------------------------------------------------------------------------ corpus readers


@pytest.fixture
def ravdess(tmp_path: Path) -> Path:
    root = tmp_path / "RAVDESS"
    for actor in range(1, 7):
        for emo in ("01", "03", "05"):
            p = root / f"Actor_{actor:02d}" / f"03-01-{emo}-01-01-01-{actor:02d}.wav"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(WAV)
    return root


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("03-01-04-01-01-01-01.wav", b"", "empty file (0 bytes)"),
        ("03-01-04-01-01-02-01.wav", b"hello, this is a text file", "not a WAV file"),
        ("03-01-04-01-02-01-01.wav", b"RIFF", "4 bytes: too short for a WAV"),
        ("03-01-04-01-02-02-01.mp4", b"\x00\x00\x00\x18notaboxatall", "not a MP4 file"),
    ],
    ids=["0-byte", "text-as-wav", "4-bytes", "not-mp4"],
)
def test_a_non_clip_is_skipped_with_its_reason_and_refused_when_strict(ravdess, capsys, name, data, reason):
    bad = ravdess / "Actor_01" / name
    bad.write_bytes(data)
    assert data_main(["list", "ravdess", str(ravdess), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert not any(r["path"] == str(bad) for r in doc["records"])  # never listed as a clip
    assert [s for s in doc["skipped"] if s["path"] == str(bad)][0]["reason"].startswith(reason)
    assert data_main(["list", "ravdess", str(ravdess), "--strict"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and str(bad) in _one_line(captured.err) and reason in captured.err


def test_corpus_reader_faults_are_one_line(tmp_path, ravdess, capsys):
    (ravdess / "Actor_01" / "03-01-04-01-01-01-02.wav").symlink_to(tmp_path / "gone.wav")
    assert data_main(["list", "ravdess", str(ravdess), "--strict"]) == 1
    assert "cannot read it" in _one_line(capsys.readouterr().err)
    assert data_main(["list", "ravdess", str(tmp_path / "nope")]) == 1
    assert "does not exist" in _one_line(capsys.readouterr().err)
    assert data_main(["list", "ravdes", str(ravdess)]) == 2
    assert "unknown corpus" in _one_line(capsys.readouterr().err)
    assert data_main(["list", "ravdess", str(ravdess), "--option", "classes"]) == 2
    assert "expected KEY=VALUE" in _one_line(capsys.readouterr().err)
    assert data_main(["list", "iemocap", str(ravdess)]) == 1  # the wrong tree: nothing found, said so
    assert "no clips found" in capsys.readouterr().err
    meld = tmp_path / "MELD"
    meld.mkdir()
    (meld / "train_sent_emo.csv").write_text("Sr No.,Utterance\n1,hi\n")  # columns missing
    assert data_main(["list", "meld", str(meld), "--strict"]) == 1
    assert "header lacks Speaker, Emotion" in _one_line(capsys.readouterr().err)
    assert data_main(["split", "ravdess", str(ravdess), "--folds", "50"]) == 2
    assert "cannot make 50 speaker-independent folds from 6 speakers" in _one_line(capsys.readouterr().err)


def test_data_split_out_is_never_clobbered(tmp_path, ravdess, capsys):
    precious = tmp_path / "precious.json"
    precious.write_text('{"mine": true}\n')
    args = ["split", "ravdess", str(ravdess), "--folds", "3"]
    assert data_main([*args, "--out", str(precious)]) == 2
    assert "pass --overwrite" in _one_line(capsys.readouterr().err) and precious.read_text() == '{"mine": true}\n'
    inside = ravdess / "Actor_01" / "03-01-01-01-01-01-01.wav"
    assert data_main([*args, "--out", str(inside), "--overwrite"]) == 2
    assert "a file of the corpus" in _one_line(capsys.readouterr().err) and inside.read_bytes() == WAV
    folds = tmp_path / "folds.json"
    assert data_main([*args, "--out", str(folds)]) == 0
    capsys.readouterr()
    assert data_main([*args, "--seed", "1", "--out", str(folds)]) == 0  # our own fold file: replaced
    assert json.loads(folds.read_text())["seed"] == 1
    assert data_main([*args, "--out", str(precious), "--overwrite"]) == 0  # asked for
    assert json.loads(precious.read_text())["corpus"] == "ravdess"


# ------------------------------------------------------------------------------------------------------- fusion


@pytest.fixture
def fusion_run(tmp_path: Path, capsys) -> tuple[Path, list[str]]:
    synth = tmp_path / "synth"
    assert fusion_main(["synth", str(synth), "--n", "60", "--steps", "4"]) == 0
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"data: {{labels: {synth / 'labels.csv'}, features: {{audio: {synth / 'audio'}, face: {synth / 'face'}}}, "
        f"steps: 4}}\nsplit: {{by: speaker, folds: 4}}\nmodel: {{hidden: 8}}\ntrain: {{epochs: 2, batch_size: 16}}\n"
        f"out: {tmp_path / 'run'}\n"
    )
    assert fusion_main(["train", str(cfg), "--quiet"]) == 0
    capsys.readouterr()
    return cfg, []


def test_fusion_hostile_battery(tmp_path, fusion_run, capsys):
    cfg, _ = fusion_run
    synth = tmp_path / "synth"
    notes = tmp_path / "mine"
    notes.mkdir()
    (notes / "notes.txt").write_text("keep me\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me too\n")
    cases = [
        (["synth", str(notes)], 2, "did not write (notes.txt)"),
        (["synth", str(a_file)], 2, "is a file"),
        (["synth", str(tmp_path / "new"), "--n", "0"], 2, "--n: must be >= 2, got 0"),
        (["train", str(cfg), f"out={a_file}"], 2, "is a file, not a folder"),
        (["train", str(cfg), f"out={notes}"], 2, "holds no fusion run"),
        (["train", str(cfg), "model.hidden=0"], 2, "model.hidden: must be >= 1, got 0"),
        (["eval", str(cfg), "--drop", "face", "--drop", "audio"], 2, "leaves no modality"),
        (["eval", str(cfg), "--drop", "text"], 2, "--drop text: the model uses audio, face"),
        (["eval", str(cfg), f"out={tmp_path / 'nothing'}"], 1, "no trained model"),
        (["train", str(cfg), f"data.labels={tmp_path / 'missing.csv'}", f"out={tmp_path / 'r2'}"], 1, "missing.csv"),
        (
            ["train", str(cfg), f"data.features.audio={tmp_path / 'nofeat'}", f"out={tmp_path / 'r3'}"],
            1,
            "does not exist",
        ),  # fmt: skip
        (["train", str(tmp_path / "nope.yaml")], 2, "does not exist"),
    ]
    for argv, code, fragment in cases:
        assert fusion_main(argv) == code, argv
        captured = capsys.readouterr()
        line = _one_line(captured.err)
        assert fragment in line, (argv, line)
    assert (notes / "notes.txt").read_text() == "keep me\n" and not (notes / "labels.csv").exists()
    assert a_file.read_text() == "keep me too\n"
    assert fusion_main(["synth", str(synth), "--n", "60", "--steps", "4"]) == 0  # our own synth set: replaced
    # a labels CSV without the label column, and a damaged model.json: one line each, exit 1
    bad = tmp_path / "bad.csv"
    bad.write_text("name,emotion\na,happy\n")
    assert fusion_main(["train", str(cfg), f"data.labels={bad}", f"out={tmp_path / 'r4'}"]) == 1
    assert "lacks name,label" in _one_line(capsys.readouterr().err)
    (tmp_path / "run" / "model.json").write_text("{not json")
    assert fusion_main(["eval", str(cfg)]) == 1
    assert "Expecting property name" in _one_line(capsys.readouterr().err)
