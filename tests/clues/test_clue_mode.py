"""Clue mode end to end on generated media built from real face photos and espeak-ng speech; fusion; the rationale
check; batch runs with resume; the CLI's one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from emollm.apps.analysis import Analysis
from emollm.apps.analyze import main
from emollm.apps.clue_mode import ClueAnalyzer, ClueSettings, template_reasoning
from emollm.clues.fusion import FusionConfig, Vote, fuse, load_fusion_config, map_distribution
from emollm.jobs.batch import BatchError, collect_inputs, run_batch
from emollm.media import fixtures

LABELS = ("neutral", "angry", "happy", "sad", "worried", "surprise")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


# ----------------------------------------------------------------------------------------------------- fusion
def test_fusion_drops_missing_voters_and_renormalises():
    cfg = FusionConfig(weights={"face_expression": 1.0, "face_aus": 1.0, "text": 0.5})
    face = Vote("face_expression", {"happy": 0.8, "sad": 0.2})
    text = Vote("text", {"happy": 0.0, "sad": 1.0})
    fused = fuse([face, text], ["happy", "sad"], cfg)  # face_aus absent: never zero-filled
    assert fused.weights == pytest.approx({"face_expression": 2 / 3, "text": 1 / 3})
    assert fused.probabilities == pytest.approx({"happy": 0.8 * 2 / 3, "sad": 0.2 * 2 / 3 + 1 / 3})
    assert fused.label == "happy"
    only_text = fuse([text], ["happy", "sad"], cfg)
    assert only_text.label == "sad" and only_text.weights == {"text": 1.0}
    none = fuse([], ["happy", "sad"], cfg)
    assert none.label is None and none.probabilities == {}
    zero = fuse([Vote("prosody", {"happy": 1.0, "sad": 0.0})], ["happy", "sad"], FusionConfig(weights={"prosody": 0}))
    assert zero.label is None  # a weight-0 voter is evidence, not a vote


def test_map_distribution_aliases_and_unmapped_mass():
    fer = {"angry": 0.1, "disgust": 0.2, "fear": 0.3, "happy": 0.4}
    dist, unmapped = map_distribution(fer, LABELS, {"fear": ["fear", "worried"], "disgust": ["contempt"]})
    assert dist["worried"] == pytest.approx(0.3 / 0.8) and dist["happy"] == pytest.approx(0.4 / 0.8)
    assert unmapped == pytest.approx(0.2)  # disgust has no counterpart among MER2023's six
    assert map_distribution({"contempt": 1.0}, LABELS)[0] is None


def test_fusion_config_errors_name_the_file(tmp_path):
    assert load_fusion_config().weights["face_expression"] > 0  # the packaged default
    bad = tmp_path / "f.yaml"
    bad.write_text("weights: {text: -1}\n")
    with pytest.raises(ValueError, match=r"f\.yaml: .*weights\.text: must be a finite number >= 0"):
        load_fusion_config(bad)
    bad.write_text("weigths: {text: 1}\n")
    with pytest.raises(ValueError, match=r"f\.yaml: weigths: unknown key \(did you mean 'weights'\?\)"):
        load_fusion_config(bad)


# ------------------------------------------------------------------------------------------------- rationale
class _FakeLLM:
    def __init__(self, text: str) -> None:
        self.text = text

    def generate(self, system: str, user: str, *, seed: int) -> str:
        return self.text


@pytest.mark.parametrize(
    ("text", "source"),
    [
        ("The smile and the upbeat words show that the person is happy.", "llm:smollm2"),
        ("The person looks sad.", "template (the LLM's rationale was rejected: names sad)"),
        ("The person is happy but also sad.", "template (the LLM's rationale was rejected: names sad)"),
        ("", "template (the LLM's rationale was rejected: empty)"),
        ("happy happy happy happy happy happy happy happy " * 4 + ".", "template (the LLM's rationale was rejected"),
        ("The person feels", "template (the LLM's rationale was rejected: truncated)"),
    ],
)
def test_rationale_is_checked_and_replaced(text, source):
    analyzer = ClueAnalyzer(LABELS)
    analyzer._models["llm"] = _FakeLLM(text)
    from emollm.apps.clue_mode import _Timer

    clues = {"visual_expression": "lip corner puller (smile)", "audio": None, "subtitle": "I passed", "visual": None}
    reasoning, got = analyzer._reason("happy", clues, _Timer())
    assert got.startswith(source)
    if got.startswith("template"):
        assert reasoning == template_reasoning("happy", clues)
        assert "happy" in reasoning and "sad" not in reasoning


def test_settings_are_checked():
    with pytest.raises(ValueError, match="frames: must be >= 1"):
        ClueSettings(frames=0)
    with pytest.raises(ValueError, match="text_model"):
        ClueSettings(text_model="bert")
    with pytest.raises(ValueError, match="duplicate label"):
        ClueAnalyzer(["happy", "Happy"])


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("clue-media")
    fixtures.make_face_clip(root / "happy.mp4", "astronaut", seconds=2.0, size=(320, 240), audio=None)
    fixtures.make_face_clip(root / "hopper.mp4", "grace_hopper", seconds=2.0, size=(320, 240), audio=None)
    fixtures.make_image(root / "face.jpg", "astronaut")
    fixtures.make_audio_file(root / "silence.wav", "silence", seconds=1.0)
    (root / "note.txt").write_text("I am so happy, this is wonderful news!\n")
    return root


@pytest.fixture(scope="module")
def analyzer():
    with ClueAnalyzer(LABELS, ClueSettings(frames=6, reasoning="template")) as a:
        yield a


def test_face_clip_gives_evidence_and_says_how(media, analyzer):
    r = analyzer(media / "happy.mp4")
    assert isinstance(r, Analysis) and r.mode == "clues" and r.label == "happy"
    assert sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-4) and set(r.probabilities) == set(LABELS)
    face = r.evidence["face"]
    assert face["au_source"] == "blendshapes" and "AU12" in face["aus"]
    assert face["aus"]["AU12"]["name"].startswith("lip corner puller") and face["aus"]["AU12"]["intensity"] > 2
    assert isinstance(face["peak_frame"], int) and face["peak_frame"] in face["frames"]
    x0, y0, x1, y1 = face["face_box"]
    assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240
    assert max(face["expression_scores"], key=face["expression_scores"].get) == "happy"
    assert len(face["expression_over_time"]) == len(face["frames"])
    assert "audio" in r.missing and "no audio track" in r.missing["audio"]
    assert r.modalities == ["face"] and r.reasoning_source == "template (asked)"
    assert r.produced_by["mode"] == "clues" and r.produced_by["models"]["face_expression"].startswith("fer2013")
    assert r.timings["total"] > 0 and "face_aus" in r.timings
    json.dumps(r.to_dict())  # JSON-ready


def test_grace_hopper_is_not_happy(media, analyzer):
    r = analyzer(media / "hopper.mp4")
    assert r.label == "neutral"
    assert r.evidence["face"]["expression_scores"]["neutral"] > 0.5


def test_image_and_text_files(media, analyzer):
    img = analyzer(media / "face.jpg")
    assert img.label == "happy" and img.modalities == ["face"]
    txt = analyzer(media / "note.txt")
    assert txt.label == "happy" and txt.modalities == ["text"] and txt.subtitle.startswith("I am so happy")
    assert txt.evidence["text"]["model_id"].startswith("minilm-zeroshot")
    assert set(txt.evidence["fusion"]["weights"]) == {"text"}


def test_silence_gives_no_label_instead_of_a_guess(media, analyzer):
    r = analyzer(media / "silence.wav")
    assert r.label is None and r.probabilities == {} and r.modalities == []
    assert "silent" in r.missing["audio"] and "no modality gave evidence" in r.missing["label"]
    assert "not enough evidence" in r.reasoning


@pytest.mark.slow
@needs_espeak
def test_speech_clip_with_llm_rationale(tmp_path):
    clip = tmp_path / "speech.mp4"
    fixtures.make_face_clip(clip, "astronaut", seconds=3.0, text="I passed the exam, this is wonderful news!")
    with ClueAnalyzer(LABELS, ClueSettings(frames=6)) as a:
        r = a(clip)
    assert r.label == "happy" and r.modalities == ["face", "audio", "text"]
    assert "passed" in r.subtitle.lower() and r.evidence["audio"]["prosody"]["has_speech"]
    assert r.evidence["audio"]["tone"] and r.evidence["text"]["label"] == "happy"
    assert r.reasoning_source == "llm:smollm2" or r.reasoning_source.startswith("template (the LLM's rationale")
    assert "happy" in r.reasoning.lower()
    assert r.produced_by["models"]["reasoning"] == "smollm2 (embedded)"


# ------------------------------------------------------------------------------------------------ bounded work
def test_long_text_and_subtitle_are_cut_with_a_note(media, analyzer, tmp_path):
    """A 320 kB text file reaches the text model (and the rationale's prompt) cut to max_text_chars, and says so."""
    big = tmp_path / "big.txt"
    big.write_text("I am so happy today, this is wonderful news. " * 7200)  # 324,000 characters
    r = analyzer(big)
    assert r.label == "happy" and len(r.subtitle) <= 2000 and r.subtitle.startswith("I am so happy")
    assert r.notes == [
        f"text file: 323,999 characters, cut to the first {len(r.subtitle):,} (limit 2,000 characters, max_text_chars)"
    ]
    assert r.produced_by["max_text_chars"] == 2000 and "note: text file: 323,999 characters" in r.report()
    wav = fixtures.make_audio_file(tmp_path / "v.wav", "tone", seconds=1.0, sample_rate=16000).path
    with ClueAnalyzer(LABELS, ClueSettings(reasoning="template", asr=False, max_text_chars=50)) as small:
        r = small(wav, subtitle="I cannot believe you lied to me again, after everything we have been through.")
    assert r.subtitle == "I cannot believe you lied to me again, after" and r.notes[0].startswith("subtitle: 77 ")
    assert analyzer(media / "note.txt").notes == []
    with pytest.raises(ValueError, match="max_text_chars: must be a positive whole number, got 0"):
        ClueSettings(max_text_chars=0)


def test_stages_stop_at_the_deadline(media, analyzer):
    from emollm.utils.deadline import Deadline, DeadlineExceeded, deadline

    scope = Deadline()
    scope.cancel("the server's limit of 1 s (--timeout-s)")
    with deadline(scope=scope), pytest.raises(DeadlineExceeded, match=r"stopped at media: the server's limit"):
        analyzer(media / "happy.mp4")
    assert analyzer(media / "note.txt").label == "happy"  # outside the scope nothing stops


@pytest.mark.slow
def test_a_320kb_text_file_with_the_llm_rationale_takes_seconds_not_minutes(tmp_path, capsys):
    """Before the bound, 32 kB took 25-95 s and 320 kB over 200 s (the whole text in SmolLM2's prompt)."""
    import time

    big = tmp_path / "big.txt"
    big.write_text("I am so happy today, this is wonderful news. " * 7200)
    start = time.perf_counter()
    assert main([str(big), "--json", "--labels", ",".join(LABELS)]) == 0
    took = time.perf_counter() - start
    out = json.loads(capsys.readouterr().out)
    print(f"320 kB text with the LLM rationale: {took:.1f} s, timings {out['timings']}")
    assert out["notes"][0].startswith("text file: 323,999 characters") and took < 120


# ------------------------------------------------------------------------------------------------------ batch
class _Counting:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, path, *, subtitle=None):
        self.calls.append(path.name)
        if path.name.startswith("bad"):
            raise ValueError(f"{path}: corrupt (re-export it)")
        return Analysis(str(path), "happy", {"happy": 1.0, "sad": 0.0}, "r", ["face"], mode="clues")


def test_batch_writes_jsonl_resumes_and_reports_failures(tmp_path, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.mp4", "bad.mp4", "sub/c.wav"):
        (folder / name).write_bytes(b"x")
    (folder / "notes.doc").write_bytes(b"x")
    skipped: list[str] = []
    inputs = collect_inputs(str(folder), None, skipped=skipped)
    assert [p.name for p in inputs] == ["a.mp4", "bad.mp4", "c.wav"]
    assert any("notes.doc: unsupported type .doc" in s for s in skipped)
    out = tmp_path / "out.jsonl"
    first = _Counting()
    assert run_batch(first, inputs, out, progress=False) == 1  # some failed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["file"] for r in rows] == [str(folder / "a.mp4"), str(folder / "sub" / "c.wav")]
    errors = [json.loads(line) for line in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    assert errors == [
        {"file": str(folder / "bad.mp4"), "error": f"ValueError: {folder / 'bad.mp4'}: corrupt (re-export it)"}
    ]
    assert "2/3 files analysed" in capsys.readouterr().err
    with open(out, "a") as f:
        f.write('{"file": "torn')  # a kill in the middle of a line
    again = _Counting()
    assert run_batch(again, inputs, out, progress=False) == 1
    assert again.calls == ["bad.mp4"]  # done files are not redone; the failure is retried
    assert len(out.read_text().splitlines()) == 2  # the torn line is gone
    bad_only = _Counting()
    assert run_batch(bad_only, [folder / "bad.mp4"], tmp_path / "o2.jsonl", progress=False) == 2  # nothing succeeded


def test_collect_inputs_errors(tmp_path):
    with pytest.raises(BatchError, match="give one media file, a folder, or --list"):
        collect_inputs(None, None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchError, match="no media files in this folder"):
        collect_inputs(str(tmp_path / "empty"), None)
    lst = tmp_path / "list.txt"
    lst.write_text("# clips\n\na.mp4\n/abs/b.wav\n")
    assert [str(p) for p in collect_inputs(None, str(lst))] == [str(tmp_path / "a.mp4"), "/abs/b.wav"]


# -------------------------------------------------------------------------------------------------------- CLI
def test_cli_json_and_one_line_errors(media, tmp_path, capsys):
    assert main([str(media / "note.txt"), "--json", "--reasoning", "template"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "clues" and out["label"] == "happy" and out["reasoning_source"] == "template (asked)"
    for argv, fragment in [
        ([str(tmp_path / "nope.mp4")], "nope.mp4: no such file"),
        ([str(media / "note.txt"), "--labels", "happy"], "--labels needs at least two labels"),
        ([str(media / "note.txt"), "--checkpoint", str(tmp_path)], str(tmp_path)),
        ([str(media)], "give --out RESULTS.jsonl"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert fragment in err and len(err.splitlines()) == 1 and "Traceback" not in err


# ------------------------------------------------------------------------------------------------------- chat
class _EchoLLM:
    def __init__(self) -> None:
        self.seen: list[list[dict]] = []

    def stream(self, messages, *, max_new_tokens=None):
        self.seen.append(list(messages))
        yield from ("answer ", str(len(self.seen)))


def test_clip_chat_keeps_history_and_gives_the_evidence(media, analyzer):
    from emollm.apps.chat import ClipChat

    analysis = analyzer(media / "happy.mp4")
    chat = ClipChat.__new__(ClipChat)  # the real constructor loads SmolLM2; the slow test below covers it
    chat.media, chat.max_new_tokens, chat.analysis, chat.checkpoint, chat.history = media, 16, analysis, None, []
    from emollm.apps.chat import SYSTEM

    chat.system = SYSTEM.format(clues=analysis.clue_description())
    chat._llm = _EchoLLM()
    assert "".join(chat.ask("Which emotion?")) == "answer 1"
    assert "".join(chat.ask("Why?")) == "answer 2"
    second = chat._llm.seen[1]
    assert second[0]["role"] == "system" and "lip corner puller" in second[0]["content"]
    assert "Estimated emotion (clues mode): happy" in second[0]["content"]
    assert [m["role"] for m in second[1:]] == ["user", "assistant", "user"] and second[2]["content"] == "answer 1"
    with pytest.raises(ValueError, match="empty question"):
        next(chat.ask("  "))


@pytest.mark.slow
def test_chat_cli_streams_answers_from_smollm2(media, capsys):
    from emollm.apps.chat import main as chat_main

    assert (
        chat_main(["--media", str(media / "note.txt"), "--ask", "What does the person say?", "--max-new-tokens", "24"])
        == 0
    )
    out = capsys.readouterr().out
    assert 'Transcript: "I am so happy' in out and "you> What does the person say?" in out
    answer = out.split("emollm> ", 1)[1].strip()
    assert answer  # streamed text from the real model
    assert chat_main(["--media", str(media / "missing.mp4"), "--ask", "x"]) == 2
    assert "missing.mp4: no such file" in capsys.readouterr().err


def test_batch_decodes_in_an_isolated_worker(media, analyzer, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01 not a video")
    inputs = [media / "note.txt", bad, media / "face.jpg"]
    out = tmp_path / "out.jsonl"
    assert run_batch(analyzer, inputs, out, progress=False) == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(Path(r["file"]).name, r["label"]) for r in rows] == [("note.txt", "happy"), ("face.jpg", "happy")]
    err = json.loads((tmp_path / "out.errors.jsonl").read_text())
    assert err["file"] == str(bad) and "bad.mp4" in err["error"]
