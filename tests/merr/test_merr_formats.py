"""emollm.data.merr_schema / merr_files: Emotion-LLaMA MERR JSON, TXT lists, transcription CSV, video lookup."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from emollm.data.merr_files import (
    find_video,
    read_label_txt,
    read_merr_json,
    read_transcriptions_csv,
    write_label_txt,
    write_merr_json,
    write_transcriptions_csv,
)
from emollm.data.merr_schema import EXTRAS_KEY, LABELS, LabelRow, MERRExtras, MERRRecord
from emollm.utils.io import atomic_write_text

# Hand-written in Emotion-LLaMA's released layout (peak_index as a string, 4-space indent, non-ASCII kept).
EL_COARSE = textwrap.dedent(
    """\
    {
        "sample_00000003": {
            "AU_list": ["AU06", "AU12", "AU14"],
            "visual_prior_list": ["cheek raiser", "lip corner puller (smile)"],
            "audio_prior_list": "The speaker's tone is light and cheerful.",
            "peak_index": "12",
            "peak_AU_list": ["AU06", "AU12"],
            "pseu_emotion": "happy",
            "caption": "This person in the video is smiling. Saying: 太好了"
        },
        "00012": {
            "AU_list": ["AU04", "AU05", "AU07", "AU23"],
            "visual_prior_list": "brow lowerer, upper lid raiser",
            "audio_prior_list": "",
            "peak_index": "0",
            "peak_AU_list": ["AU04", "AU05"],
            "pseu_emotion": "angry",
            "caption": "Frowning."
        }
    }
    """
)
EL_FINE = textwrap.dedent(
    """\
    {
        "sample_00000023": {
            "AU_list": ["AU04", "AU05"],
            "visual_prior_list": ["brow lowerer"],
            "audio_prior_list": "loud",
            "peak_index": "7",
            "peak_AU_list": ["AU04"],
            "pseu_emotion": "angry",
            "smp_reason_caption": "The furrowed brow and loud voice suggest anger.",
            "text": "Get out!"
        }
    }
    """
)


def _records() -> list[MERRRecord]:
    return [
        MERRRecord(
            name="sample_00000023",
            AU_list=["AU04", "AU05", "AU07"],
            visual_prior_list=["brow lowerer", "upper lid raiser"],
            audio_prior_list="The tone is sharp.",
            peak_index=7,
            peak_AU_list=["AU04", "AU05"],
            pseu_emotion="angry",
            caption="A man frowns. Saying: 走开!",
            smp_reason_caption="Furrowed brow and a sharp tone: anger.",
            text="走开!",
            extras=MERRExtras(au_source="openface/sample_00000023.csv", frame_count=35, valence=-1.174107),
        ),
        MERRRecord(
            name="00012",  # numeric DFEW-style id stays a string
            AU_list=["AU06", "AU12"],
            visual_prior_list="cheek raiser",
            audio_prior_list=["calm"],
            peak_index=0,
            peak_AU_list=["AU06"],
            pseu_emotion="happy",
            caption="Smiling.",
            smp_reason_caption="Smile.",
            text="",
            extras=MERRExtras(frame_count=12, valence=-10.0, peak_rule="paper", peak_frame=1, more={"note": "x"}),
        ),
    ]


# ----------------------------------------------------------------------------------------------------------- JSON


@pytest.mark.parametrize("kind", ["coarse", "fine"])
def test_json_round_trip_with_extras(tmp_path, kind):
    recs = _records()
    p = write_merr_json(tmp_path / f"MERR_{kind}_grained.json", recs, kind, include_extras=True)
    back = read_merr_json(p, kind)
    if kind == "coarse":  # the coarse file carries no reasoning/subtitle
        recs = [MERRRecord(**{**r.__dict__, "smp_reason_caption": None, "text": None}) for r in recs]
    else:
        recs = [MERRRecord(**{**r.__dict__, "caption": None}) for r in recs]
    assert back == recs
    assert [r.name for r in back] == ["sample_00000023", "00012"]


def test_json_default_export_is_exactly_emotion_llama(tmp_path):
    p = write_merr_json(tmp_path / "MERR_coarse_grained.json", _records(), "coarse")
    raw = json.loads(p.read_text(encoding="utf-8"))
    entry = raw["sample_00000023"]
    assert list(entry) == [
        "AU_list", "visual_prior_list", "audio_prior_list", "peak_index", "peak_AU_list", "pseu_emotion", "caption"
    ]  # fmt: skip
    assert entry["peak_index"] == "7" and EXTRAS_KEY not in entry
    assert "走开" in p.read_text(encoding="utf-8")  # ensure_ascii=False, like the released files
    fine = json.loads(write_merr_json(tmp_path / "f.json", _records(), "fine").read_text(encoding="utf-8"))
    assert list(fine["00012"])[-2:] == ["smp_reason_caption", "text"] and "caption" not in fine["00012"]
    back = read_merr_json(p)
    assert back[0].extras == MERRExtras()  # extras not written unless asked


def test_reads_emotion_llama_files(tmp_path):
    (tmp_path / "MERR_coarse_grained.json").write_text(EL_COARSE, encoding="utf-8")
    (tmp_path / "MERR_fine_grained.json").write_text(EL_FINE, encoding="utf-8")
    coarse = read_merr_json(tmp_path / "MERR_coarse_grained.json", "coarse")
    assert [r.name for r in coarse] == ["sample_00000003", "00012"]
    assert coarse[0].peak_index == 12 and coarse[0].pseu_emotion == "happy" and coarse[0].caption.endswith("太好了")
    assert coarse[1].visual_prior_list == "brow lowerer, upper lid raiser"  # a string is accepted as-is
    fine = read_merr_json(tmp_path / "MERR_fine_grained.json")
    assert fine[0].smp_reason_caption.startswith("The furrowed") and fine[0].text == "Get out!"
    # Import -> export reproduces the same JSON content.
    out = write_merr_json(tmp_path / "again.json", coarse, "coarse")
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(EL_COARSE)
    out = write_merr_json(tmp_path / "again_f.json", fine, "fine")
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(EL_FINE)


def test_unknown_keys_preserved(tmp_path):
    data = json.loads(EL_FINE)
    data["sample_00000023"]["valence_pred"] = -1.17
    p = tmp_path / "x.json"
    p.write_text(json.dumps(data))
    rec = read_merr_json(p)[0]
    assert rec.other == {"valence_pred": -1.17}
    out = write_merr_json(tmp_path / "y.json", [rec], "fine")
    assert json.loads(out.read_text())["sample_00000023"]["valence_pred"] == -1.17


@pytest.mark.parametrize(
    ("text", "kind", "pattern"),
    [
        ('{\n  "a": {\n    "caption": "x",\n  }\n}', "auto", r"bad\.json:4:3: invalid JSON"),
        ('[{"caption": "x"}]', "auto", r"bad\.json:1: expected a JSON object keyed by video stem"),
        (
            '{\n"a": {"caption": "x"},\n"b": {"peak_index": "abc", "caption": "y"}\n}',
            "auto",
            r"bad\.json:3: record 'b'.*peak_index",
        ),
        (
            '{\n"a": {"caption": "x"},\n"b": {"AU_list": "AU01", "caption": "y"}\n}',
            "auto",
            r"bad\.json:3: record 'b'.*AU_list",
        ),
        ('{\n"a": {"caption": 5}\n}', "auto", r"bad\.json:2: record 'a'.*'caption' must be a string"),
        ('{\n"a": 3\n}', "auto", r"bad\.json:2: record 'a': record must be a JSON object"),
        ('{\n"a": {"caption": "x"},\n"a": {"caption": "y"}\n}', "auto", r"bad\.json:2: duplicate key 'a'"),
        ('{\n"a": {"caption": "x"}\n}', "fine", r"bad\.json:2: record 'a' has no 'smp_reason_caption'.*fine-grained"),
        ('{\n"a": {"smp_reason_caption": "x"}\n}', "coarse", r"bad\.json:2: record 'a' has no 'caption'"),
    ],
)
def test_json_malformed(tmp_path, text, kind, pattern):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        read_merr_json(p, kind)


def test_json_writer_validation(tmp_path):
    recs = _records()
    with pytest.raises(ValueError, match="duplicate record name"):
        write_merr_json(tmp_path / "d.json", [recs[0], recs[0]], "coarse")
    with pytest.raises(ValueError, match="no pseu_emotion"):
        write_merr_json(tmp_path / "d.json", [MERRRecord("x", peak_index=1, caption="c")], "coarse")
    with pytest.raises(ValueError, match="no caption"):
        write_merr_json(tmp_path / "d.json", [MERRRecord("x", peak_index=1, pseu_emotion="sad")], "coarse")
    with pytest.raises(ValueError, match="no peak_index"):
        write_merr_json(tmp_path / "d.json", [MERRRecord("x", pseu_emotion="sad", caption="c")], "coarse")
    assert not (tmp_path / "d.json").exists()
    with pytest.raises(TypeError, match="non-empty string"):
        MERRRecord(12)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------------ TXT


def test_reads_emotion_llama_txt_layouts(tmp_path):
    p = tmp_path / "MERR_fine_grained.txt"
    p.write_text(
        "sample_00000023 35 angry -1.174107\nsample_00000046 98 angry -2.5923429\n"
        "sample_00000047 22 surprise -0.61232674"  # no trailing newline, like MER-Factory's writer
    )
    rows = read_label_txt(p, "ncev", labels=LABELS)
    assert rows[0] == LabelRow("sample_00000023", "angry", 35, -1.174107)
    assert rows[2].valence == pytest.approx(-0.61232674)
    nce = tmp_path / "MERR_coarse_grained.txt"
    nce.write_text("sample_00000003 43 happy\nsample_00000012 213 angry\n")
    assert read_label_txt(nce) == [LabelRow("sample_00000003", "happy", 43), LabelRow("sample_00000012", "angry", 213)]
    ne = tmp_path / "ne.txt"
    ne.write_text("00012 neutral\n\n  0013   sad  \n")  # blank lines and extra spaces ok; ids stay strings
    assert read_label_txt(ne, "ne") == [LabelRow("00012", "neutral"), LabelRow("0013", "sad")]
    test3 = tmp_path / "relative_test3_NCEV.txt"
    test3.write_text("sample_00000001 50 neutral -10\n")
    assert read_label_txt(test3)[0].valence == -10.0


@pytest.mark.parametrize("columns", ["NCEV", "NCE", "NE"])
def test_txt_round_trip(tmp_path, columns):
    rows = [LabelRow("sample_00000023", "angry", 35, -1.174107), LabelRow("00012", "happy", 12, -10.0)]
    p = write_label_txt(tmp_path / "l.txt", rows, columns)
    back = read_label_txt(p, columns.lower())
    keep_c, keep_v = "C" in columns, "V" in columns
    assert back == [
        LabelRow(r.name, r.label, r.frame_count if keep_c else None, r.valence if keep_v else None) for r in rows
    ]
    if columns == "NCEV":
        assert p.read_text().splitlines() == ["sample_00000023 35 angry -1.174107", "00012 12 happy -10"]


def test_txt_from_records_and_writer_errors(tmp_path):
    p = write_label_txt(tmp_path / "r.txt", _records(), "NCEV")
    assert p.read_text().splitlines()[0] == "sample_00000023 35 angry -1.174107"
    with pytest.raises(ValueError, match="no valence"):
        write_label_txt(tmp_path / "x.txt", [LabelRow("a", "sad", 3)], "NCEV")
    with pytest.raises(ValueError, match="no frame_count"):
        write_label_txt(tmp_path / "x.txt", [LabelRow("a", "sad")], "NCE")
    with pytest.raises(ValueError, match="whitespace"):
        write_label_txt(tmp_path / "x.txt", [LabelRow("a b", "sad")], "NE")
    with pytest.raises(ValueError, match="columns must be"):
        write_label_txt(tmp_path / "x.txt", [], "NV")
    assert not (tmp_path / "x.txt").exists()


@pytest.mark.parametrize(
    ("text", "fmt", "pattern"),
    [
        ("a 3 sad 0.1\nb 4 happy\n", "ncev", r"l\.txt:2: expected N C E V \(4 .* got 3.*fmt='auto'"),
        ("a 3 sad 0.1 extra\n", "auto", r"l\.txt:1: expected N E / N C E / N C E V \(2-4 .* got 5"),
        ("onlyname\n", "auto", r"l\.txt:1: .* got 1"),
        ("a 3 sad\nb x happy\n", "auto", r"l\.txt:2: frame count \(column 2\) must be an integer, got 'x'"),
        ("a 3 sad high\n", "auto", r"l\.txt:1: valence \(column 4\) must be a number, got 'high'"),
        ("a 3 sad\n\na 4 happy\n", "auto", r"l\.txt:3: duplicate name 'a' \(first on line 1\)"),
        ("a 3 joyful\n", "auto", r"l\.txt:1: unknown label 'joyful'"),
    ],
)
def test_txt_malformed(tmp_path, text, fmt, pattern):
    p = tmp_path / "l.txt"
    p.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        read_label_txt(p, fmt, labels=LABELS)


# ------------------------------------------------------------------------------------------------------------ CSV


def test_transcriptions_round_trip_and_el_layout(tmp_path):
    sents = {"sample_00000023": "Get out, now!", "00012": 'He said "hi"\nthen left', "7": ""}
    p = write_transcriptions_csv(tmp_path / "transcription_en_all.csv", sents)
    assert p.read_text().startswith("name,sentence\n")
    back = read_transcriptions_csv(p)
    assert back == sents and list(back) == list(sents)
    assert all(isinstance(k, str) for k in back)
    el = tmp_path / "el.csv"
    el.write_text('name,sentence\n00012,Hello there.\nsample_00000003,"Yes, I do."\n0099,我很好\n', encoding="utf-8")
    assert read_transcriptions_csv(el) == {"00012": "Hello there.", "sample_00000003": "Yes, I do.", "0099": "我很好"}
    extra = tmp_path / "extra.csv"
    extra.write_text("\ufeffid,name,sentence,chinese\n1,00012,hi,你好\n", encoding="utf-8")  # BOM + extra columns
    assert read_transcriptions_csv(extra) == {"00012": "hi"}


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("", r"t\.csv:1: empty file"),
        ("file,text\na,b\n", r"t\.csv:1: header .* lacks 'name' and/or 'sentence'"),
        ('name,sentence\na,"multi\nline"\nb\n', r"t\.csv:4: row has 1 fields"),
        ("name,sentence\na,x\n,y\n", r"t\.csv:3: empty name"),
        ("name,sentence\na,x\nb,y\na,z\n", r"t\.csv:4: duplicate name 'a' \(first on line 2\)"),
    ],
)
def test_transcriptions_malformed(tmp_path, text, pattern):
    p = tmp_path / "t.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        read_transcriptions_csv(p)


# ---------------------------------------------------------------------------------------------- video + atomicity


def test_find_video_mp4_then_avi(tmp_path):
    (tmp_path / "a.avi").write_bytes(b"")
    assert find_video(tmp_path, "a") == tmp_path / "a.avi"
    (tmp_path / "a.mp4").write_bytes(b"")
    assert find_video(tmp_path, "a") == tmp_path / "a.mp4"
    (tmp_path / "00012.avi").write_bytes(b"")
    assert find_video(tmp_path, "00012") == tmp_path / "00012.avi"
    with pytest.raises(FileNotFoundError, match=r"tried .*b\.mp4, .*b\.avi"):
        find_video(tmp_path, "b")
    with pytest.raises(TypeError, match="keep numeric ids as text"):
        find_video(tmp_path, 12)  # type: ignore[arg-type]


def test_atomic_write_replaces_and_cleans_up(tmp_path, monkeypatch):
    p = tmp_path / "sub" / "f.txt"
    atomic_write_text(p, "one\r\n")
    assert p.read_bytes() == b"one\r\n"  # no newline translation
    atomic_write_text(p, "two\n")
    assert p.read_text() == "two\n"

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_label_txt(p, [LabelRow("a", "sad")], "NE")
    assert p.read_text() == "two\n"  # original untouched
    assert sorted(x.name for x in p.parent.iterdir()) == ["f.txt"]  # no temp file left
