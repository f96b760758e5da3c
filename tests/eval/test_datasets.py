"""emollm_eval.datasets: loaders on generated files in the released formats, and on malformed ones."""

from pathlib import Path

import pytest

from emollm.labels import DFEW_LABELS, MERR_LABELS
from emollm_eval.datasets import (
    MER2023_PROTOCOLS,
    DFEWSample,
    EMERSample,
    MER2023Sample,
    NCEVSample,
    OVSample,
    Prediction,
    dfew_split_path,
    read_dfew_split,
    read_emer,
    read_mer2023_labels,
    read_ncev,
    read_ov_labels,
    read_predictions,
)


def _write(tmp_path: Path, text: str, name: str = "f.csv", *, bom: bool = False, crlf: bool = False) -> Path:
    path = tmp_path / name
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


# ---------------------------------------------------------------------------------------------------------- DFEW


def test_dfew_split_maps_1_indexed_labels_and_keeps_names_as_strings(tmp_path: Path) -> None:
    rows = "".join(f"{i:05d},{i}\n" for i in range(1, 8))
    path = _write(tmp_path, "video_name,label\n" + rows + "12345,3\n")
    samples = read_dfew_split(path)
    assert samples[:2] == [DFEWSample("00001", "happy"), DFEWSample("00002", "sad")]
    assert [s.label for s in samples[:7]] == list(DFEW_LABELS)
    assert samples[-1] == DFEWSample("12345", "neutral")
    name, label = samples[0]  # records unpack like tuples
    assert (name, label) == ("00001", "happy")


@pytest.mark.parametrize(("bom", "crlf"), [(True, False), (False, True), (True, True)])
def test_bom_and_windows_newlines_are_read(tmp_path: Path, bom: bool, crlf: bool) -> None:
    path = _write(tmp_path, "video_name,label\n00025,7\n\n00026,1\n", bom=bom, crlf=crlf)
    assert read_dfew_split(path) == [DFEWSample("00025", "fear"), DFEWSample("00026", "happy")]


def test_dfew_custom_label_names(tmp_path: Path) -> None:
    path = _write(tmp_path, "video_name,label\n1,2\n")
    assert read_dfew_split(path, labels=["Happiness", "Sadness"]) == [DFEWSample("1", "Sadness")]


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("", 1, "empty"),
        ("\n\n", 1, "empty"),
        ("video_name,label\n", 1, "no rows"),
        ("video,emotion\n1,1\n", 1, "missing column"),
        ("video_name;label\n1;1\n", 1, "semicolon-separated"),
        ("video_name,label\n1,8\n", 2, "out of range 1..7"),
        ("video_name,label\n1,1\n2,0\n", 3, "0-indexed"),
        ("video_name,label\n1,happy\n", 2, "not an integer"),
        ("video_name,label\n1,1\n2,1\n1,2\n", 4, "duplicate name '1' \\(first on line 2\\)"),
        ("video_name,label\n,1\n", 2, "empty sample name"),
        ("video_name,label\n1,1,5\n", 2, "3 fields but the header has 2"),
        ("video_name,label,label\n1,1,1\n", 1, "duplicate column 'label'"),
        ("00001,1\n00002,3\n", 1, "header line seems to be missing"),
    ],
)
def test_dfew_malformed_files_name_file_line_and_fix(tmp_path: Path, text: str, line: int, match: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=match) as info:
        read_dfew_split(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert "; " in str(info.value)  # problem; fix


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="file not found; check the path"):
        read_dfew_split(tmp_path / "nope.csv")
    path = tmp_path / "gbk.csv"
    path.write_bytes("name,openset\n样本,['开心']\n".encode("gbk"))
    with pytest.raises(ValueError, match="not UTF-8.*re-save it as UTF-8"):
        read_ov_labels(path)
    with pytest.raises(ValueError, match="is a directory"):
        read_dfew_split(tmp_path)


def test_dfew_split_path(tmp_path: Path) -> None:
    (tmp_path / "EmoLabel_DataSplit").mkdir()
    expected = tmp_path / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv"
    assert dfew_split_path(tmp_path, 1) == expected
    assert dfew_split_path(tmp_path / "EmoLabel_DataSplit", 1) == expected
    assert dfew_split_path(tmp_path, 5, "train").name == "set_5.csv"
    assert dfew_split_path(tmp_path, 5, "train").parent.name == "train(single-labeled)"
    with pytest.raises(ValueError, match="fold"):
        dfew_split_path(tmp_path, 6)


# ------------------------------------------------------------------------------------------------------- MER2023


def test_mer2023_labels(tmp_path: Path) -> None:
    path = _write(tmp_path, "name,discrete,valence\nsample_00000023,angry,-1.174107\nsample_3,Happy,2\nx,neutral,-10\n")
    assert read_mer2023_labels(path) == [
        MER2023Sample("sample_00000023", "angry", -1.174107),
        MER2023Sample("sample_3", "happy", 2.0),
        MER2023Sample("x", "neutral", -10.0),  # unlabelled placeholder kept
    ]
    no_valence = _write(tmp_path, "name,discrete\na,sad\n", "nv.csv")
    assert read_mer2023_labels(no_valence) == [MER2023Sample("a", "sad", None)]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name,discrete,valence\na,fear,0\n", "unknown label 'fear'.*neutral, angry, happy, sad, worried, surprise"),
        ("name,discrete,valence\na,sad,\n", "valence '' is not a number"),
        ("name,discrete,valence\na,sad,nan\n", "not a finite number"),
        ("name,valence\na,1\n", "missing column\\(s\\) discrete"),
    ],
)
def test_mer2023_malformed(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_mer2023_labels(_write(tmp_path, text))


def test_mer2023_protocols() -> None:
    assert set(MER2023_PROTOCOLS) == {"test1", "test2", "test3"}
    assert MER2023_PROTOCOLS["test1"].uses_valence and MER2023_PROTOCOLS["test2"].uses_valence
    assert MER2023_PROTOCOLS["test1"].metrics[0] == "combined"
    assert MER2023_PROTOCOLS["test3"].metrics == ("weighted_f1",)
    assert not MER2023_PROTOCOLS["test3"].uses_valence
    assert MER2023_PROTOCOLS["test3"].subset == "MER-SEMI"


# ---------------------------------------------------------------------------------------------------------- EMER


def test_emer_v1_and_v2_by_header(tmp_path: Path) -> None:
    v1 = _write(
        tmp_path,
        'names,emotions,subtitles,reasons\nsample_1,"worried, sad","I lost it.","In the video, she frowns, and ..."\n',
        "gt-eng.csv",
    )
    assert read_emer(v1) == [
        EMERSample(
            "sample_1", "In the video, she frowns, and ...", "v1", emotions="worried, sad", subtitle="I lost it."
        )
    ]
    v2 = _write(
        tmp_path, "name,chinese,english\nsamplenew_1,她很开心。,She is happy.\n", "final-EMER-reason.csv", bom=True
    )
    assert read_emer(v2) == [EMERSample("samplenew_1", "She is happy.", "v2", chinese="她很开心。")]


def test_emer_unknown_header(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="names,emotions,subtitles,reasons.*name,chinese,english"):
        read_emer(_write(tmp_path, "name,reason\na,b\n"))


# ------------------------------------------------------------------------------------------------------ MER-OV


def test_ov_labels(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "name,openset\na,\"['excited', 'joyful', 'happy']\"\nb,[]\nc,\nd,\"('calm',)\"\n", "ov.csv", crlf=True
    )
    assert read_ov_labels(path) == [
        OVSample("a", ["excited", "joyful", "happy"]),
        OVSample("b", []),
        OVSample("c", []),
        OVSample("d", ["calm"]),
    ]


@pytest.mark.parametrize("cell", ["happy", "\"__import__('os').system('true')\"", '"[1, 2]"', "\"{'a': 1}\""])
def test_ov_labels_reject_non_lists_without_evaluating(tmp_path: Path, cell: str) -> None:
    with pytest.raises(ValueError, match=r"f.csv:2: openset .* is not a list of strings"):
        read_ov_labels(_write(tmp_path, f"name,openset\na,{cell}\n"))


# ------------------------------------------------------------------------------------------------------- NCEV


def test_ncev_formats(tmp_path: Path) -> None:
    text = "sample_00000023 35 angry -1.174107\nsample_00000024\t40\thappy\t-10\n\n"
    path = _write(tmp_path, text, "relative_test3_NCEV.txt", crlf=True)
    assert read_ncev(path) == [
        NCEVSample("sample_00000023", "angry", 35, -1.174107),
        NCEVSample("sample_00000024", "happy", 40, -10.0),
    ]
    assert read_ncev(path, "ncev", labels=MERR_LABELS) == read_ncev(path)
    nce = _write(tmp_path, "s1 10 doubt\ns2 11 contempt\n", "MER2024-noise_NCE.txt")
    assert read_ncev(nce) == [NCEVSample("s1", "doubt", 10, None), NCEVSample("s2", "contempt", 11, None)]
    ne = _write(tmp_path, "00001 happy\n00002 sad\n", "ne.txt", bom=True)
    assert read_ncev(ne, "ne") == [NCEVSample("00001", "happy"), NCEVSample("00002", "sad")]


@pytest.mark.parametrize(
    ("text", "fmt", "match"),
    [
        ("", "auto", "f.txt:1: the file is empty"),
        ("a 1 happy 0\nb\n", "auto", "f.txt:2: 1 column"),
        ("a happy\n", "ncev", "f.txt:1: 2 columns, but fmt='ncev' needs 4"),
        ("a x happy 0\n", "auto", "f.txt:1: frame count 'x' is not an integer"),
        ("a 1 happy v\n", "auto", "f.txt:1: valence 'v' is not a number"),
        ("a 1 happy\na 2 sad\n", "auto", "f.txt:2: duplicate name 'a'"),
        ("a 1 elated\n", "auto", "f.txt:1: unknown label 'elated'"),
    ],
)
def test_ncev_malformed(tmp_path: Path, text: str, fmt: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_ncev(_write(tmp_path, text, "f.txt"), fmt, labels=MERR_LABELS)  # type: ignore[arg-type]


def test_ncev_bad_fmt(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fmt must be"):
        read_ncev(_write(tmp_path, "a b\n", "f.txt"), "nc")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------- predictions


def test_predictions(tmp_path: Path) -> None:
    free = _write(tmp_path, 'name,prediction\n00001,"The emotion is happy, clearly."\n00002,\n', "p.csv")
    assert read_predictions(free) == [Prediction("00001", "The emotion is happy, clearly."), Prediction("00002", "")]
    sub = _write(tmp_path, "name,discrete,valence\na,sad,-1.5\nb,happy,\n", "s.csv", bom=True, crlf=True)
    assert read_predictions(sub) == [Prediction("a", "sad", -1.5), Prediction("b", "happy", None)]
    index_col = _write(tmp_path, ",name,prediction\n0,a,sad\n", "i.csv")  # pandas index column is ignored
    assert read_predictions(index_col) == [Prediction("a", "sad")]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name,prediction,discrete\na,b,c\n", "both 'prediction' and 'discrete'"),
        ("name,label\na,b\n", "missing column\\(s\\) prediction"),
        ("name,prediction\na,b\na,c\n", "duplicate name 'a'"),
        ("name,discrete,valence\na,sad,high\n", "valence 'high' is not a number"),
    ],
)
def test_predictions_malformed(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_predictions(_write(tmp_path, text))


def test_unterminated_quote_in_a_prediction_csv_is_an_error_not_a_swallowed_file(tmp_path):
    from emollm_eval.datasets import read_predictions

    p = tmp_path / "pred.csv"
    p.write_text('name,prediction\na,happy\nb,"sad\nc,angry\nd,neutral\n')
    with pytest.raises(ValueError, match=r"pred\.csv:3: a quoted field opened here is never closed"):
        read_predictions(p)
    p.write_text('name,prediction\na,"happy, really"\nb,"multi\nline"\n')  # legal quoting still reads
    assert [(r.name, r.prediction) for r in read_predictions(p)] == [("a", "happy, really"), ("b", "multi\nline")]
