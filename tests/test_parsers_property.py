"""Every parser of a user's file, fed generated input (hypothesis): it returns a result or raises one clear error,
an exception type its docstring names, whose message names the file; never another exception (a traceback).

Parsers: label CSVs (fusion ``labels.csv``, MER2023, DFEW, open-vocabulary), prediction files, Emotion-LLaMA's
``N C E V`` lists and MERR JSON, transcripts, OpenFace CSVs, run / fusion configs (YAML), corpus trees (RAVDESS,
CREMA-D, IEMOCAP, MELD names and files), checkpoint metadata (``checkpoint.json``) and released ``.pth`` files.

Inputs mix three sources: free text (any unicode, NUL and control characters included), raw bytes (invalid UTF-8,
magic numbers of other formats) and near-valid files assembled from each format's own words (headers, labels,
``nan``/``inf``, quotes, separators), which reach deeper than random text does. Example counts are bounded
(``EXAMPLES``) so the whole module runs in well under a minute; ``HYPOTHESIS_PROFILE=thorough`` runs 20x more.
"""

from __future__ import annotations

import json
import os
import string
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

settings.register_profile(
    "bounded", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("thorough", max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "bounded")
settings.load_profile(PROFILE)

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------------------ strategies

WORDS = [
    "name", "label", "speaker", "split", "discrete", "valence", "prediction", "openset", "video_name", "sentence",
    "happy", "sad", "neutral", "angry", "worried", "surprise", "HAPPY", "joy", "1", "7", "0", "-10", "3.5", "1e309",
    "nan", "inf", "-inf", "", " ", "00012", "train", "val", "test", "['happy', 'calm']", "[", "'", '"', '"a,b"',
    "AU01_r", "AU12_r", "AU06_c", "frame", "success", "confidence", "face_id", "timestamp", "é", "\u200b", "\x00",
]  # fmt: skip
SEPARATORS = [",", ", ", ";", "\t", " "]


@st.composite
def table_text(draw, words=WORDS) -> str:
    """A near-valid delimited file: rows of cells from the formats' own vocabulary."""
    sep = draw(st.sampled_from(SEPARATORS))
    n_cols = draw(st.integers(1, 6))
    rows = draw(
        st.lists(
            st.lists(st.one_of(st.sampled_from(words), st.text(max_size=6)), min_size=0, max_size=n_cols + 1),
            max_size=8,
        )
    )
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    bom = draw(st.sampled_from(["", "\ufeff"]))
    return bom + newline.join(sep.join(r) for r in rows) + draw(st.sampled_from(["", newline]))


def contents(structured: st.SearchStrategy | None = None) -> st.SearchStrategy:
    """Text or bytes: free unicode, raw bytes, or a near-valid file of the format."""
    options = [st.text(max_size=200), st.binary(max_size=200), table_text()]
    if structured is not None:
        options.append(structured)
    return st.one_of(*options)


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_bytes(data.encode("utf-8", "surrogatepass"))
    else:
        path.write_bytes(data)
    return path


def check(
    parse: Callable[[Path], object], path: Path, allowed: tuple[type[BaseException], ...], *, names_file: bool = True
) -> None:
    """``parse(path)`` returns, or raises one of ``allowed`` with a message naming the file (a config error names
    the dotted key instead: the file is the command's one argument, and the key may come from an override)."""
    try:
        parse(path)
    except allowed as e:
        message = str(e)
        assert message.strip(), f"{type(e).__name__} without a message"
        if names_file:
            assert path.name in message or str(path) in message, f"the message does not name the file: {message!r}"
        else:
            assert "\n" not in message.strip(), f"not one line: {message!r}"
    # anything else propagates: the failure hypothesis reports (and shrinks) is the traceback a user would see


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _fresh(workdir: Path, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(dir=workdir))
    return folder / name


# ------------------------------------------------------------------------------------------------- label files


@given(data=contents())
def test_fusion_labels_csv(workdir, data):
    from emollm.fusion.data import read_labels_csv

    check(read_labels_csv, _write(_fresh(workdir, "labels.csv"), data), (ValueError,))


@pytest.mark.parametrize("reader", ["read_mer2023_labels", "read_dfew_split", "read_ov_labels", "read_predictions"])
@given(data=contents())
def test_eval_label_and_prediction_csvs(workdir, reader, data):
    import emollm_eval.datasets as datasets

    check(getattr(datasets, reader), _write(_fresh(workdir, "file.csv"), data), (ValueError,))


@given(data=contents())
def test_openset_csv_of_score_ov(workdir, data):
    from emollm_eval.score import _read_openset_csv

    check(_read_openset_csv, _write(_fresh(workdir, "ov.csv"), data), (ValueError,))


NCEV_WORDS = [*WORDS, "sample_00000001", "12", "worried", "-10.0", "x" * 3]


@given(data=contents(table_text(NCEV_WORDS)))
def test_ncev_label_lists(workdir, data):
    from emollm.data.merr_files import read_label_txt

    check(read_label_txt, _write(_fresh(workdir, "labels.txt"), data), (ValueError,))


@given(data=contents())
def test_transcripts_csv(workdir, data):
    from emollm.data.merr_files import read_transcriptions_csv

    check(read_transcriptions_csv, _write(_fresh(workdir, "transcription_en_all.csv"), data), (ValueError,))


# ------------------------------------------------------------------------------------------------------ MERR JSON

JSONISH = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(["happy", "sad", "", "00012", "AU12", "nan"]), st.text(max_size=10),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(["name", "label", "pseudo_label", "reason", "caption", "AU", "peak", "x",
                             "smp_reason_caption"]),
            children, max_size=5,
        ),
    ),
    max_leaves=20,
)  # fmt: skip


@st.composite
def merr_json(draw) -> str:
    records = draw(st.dictionaries(st.sampled_from(["sample_00000001", "00012", "a", ""]), JSONISH, max_size=4))
    doc = draw(st.sampled_from([records, list(records.values()), {"records": records}]))
    return json.dumps(doc)


@given(data=contents(merr_json()), kind=st.sampled_from(["auto", "coarse", "fine"]))
def test_merr_json(workdir, data, kind):
    from emollm.data.merr_files import read_merr_json

    check(lambda p: read_merr_json(p, kind), _write(_fresh(workdir, "MERR_fine_grained.json"), data), (ValueError,))


# --------------------------------------------------------------------------------------------------- OpenFace CSV

OPENFACE_WORDS = [*WORDS, "frame", " face_id", " timestamp", " confidence", " success", " AU01_r", " AU12_c", "0.98"]


@given(data=contents(table_text(OPENFACE_WORDS)))
def test_openface_csv(workdir, data):
    from emollm.aus.openface import read_openface_csv

    check(read_openface_csv, _write(_fresh(workdir, "openface.csv"), data), (ValueError,))


# -------------------------------------------------------------------------------------------------------- configs


@st.composite
def yaml_text(draw) -> str:
    """YAML of the run config's own keys, with hostile values."""
    keys = ["model", "data", "train", "grpo", "lora", "backbone", "labels", "lr", "lora_lr", "beta", "batch_size",
            "max_steps", "stage", "tasks", "modalities", "x", "seed", "out", "method", "hidden"]  # fmt: skip
    values = ["1", "-1", ".nan", ".inf", "1e-4", "null", "[]", "{}", "[a, b]", "'x'", "yes", "no", "smollm2", "0x10",
              "&a 1", "*a", "!!python/object:os.system ''", "{a: 1, a: 2}", '"\\x00"']  # fmt: skip
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        indent = "  " * draw(st.integers(0, 2))
        lines.append(f"{indent}{draw(st.sampled_from(keys))}: {draw(st.sampled_from(values))}")
    return "\n".join(lines)


@given(data=contents(yaml_text()))
def test_run_config(workdir, data):
    from emollm.runconfig import ConfigError, load_config, validate

    def parse(p: Path) -> object:
        return validate(load_config(p))

    check(parse, _write(_fresh(workdir, "run.yaml"), data), (ConfigError,), names_file=False)


@given(data=contents(yaml_text()))
def test_fusion_config(workdir, data):
    from emollm.fusion.config import FusionConfigError, load_config

    check(load_config, _write(_fresh(workdir, "fusion.yaml"), data), (FusionConfigError,), names_file=False)


# --------------------------------------------------------------------------------------------------- corpus trees

NAME_PARTS = {
    "ravdess": st.builds(
        lambda f, ext: "-".join(f) + ext,
        st.lists(
            st.sampled_from(["01", "02", "03", "05", "08", "09", "24", "25", "00", "1", "aa"]), min_size=6, max_size=8
        ),
        st.sampled_from([".wav", ".mp4", ".WAV", ".txt"]),
    ),  # fmt: skip
    "crema-d": st.builds(
        lambda a, s, e, lvl, ext: f"{a}_{s}_{e}_{lvl}{ext}",
        st.sampled_from(["1001", "1091", "1092", "0999", "abcd"]),
        st.sampled_from(["DFA", "IEO", "XXX", ""]),
        st.sampled_from(["ANG", "HAP", "JOY", "ang"]),
        st.sampled_from(["XX", "HI", "ZZ"]),
        st.sampled_from([".wav", ".flv", ".mp4"]),
    ),
}
MEDIA_BYTES = st.sampled_from([b"", b"RIFF", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"\x00\x00\x00\x18ftypisom", b"hello"])


@st.composite
def corpus_tree(draw, corpus: str) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {}
    if corpus in NAME_PARTS:
        for _ in range(draw(st.integers(0, 6))):
            folder = draw(st.sampled_from(["", "Actor_01/", "AudioWAV/", ".hidden/", "a/b/"]))
            files[folder + draw(NAME_PARTS[corpus])] = draw(MEDIA_BYTES)
    elif corpus == "iemocap":
        line = st.builds(
            lambda s, e, turn, emo, v: f"[{s} - {e}]\t{turn}\t{emo}\t[{v}, {v}, {v}]",
            st.sampled_from(["6.2", "x", "-1"]),
            st.sampled_from(["8.2", ""]),
            st.sampled_from(["Ses01F_impro01_M013", "Ses06F_x_M001", "Ses01F_impro01", "bad"]),
            st.sampled_from(["neu", "hap", "xxx", "zzz"]),
            st.sampled_from(["2.5", "nan", "a"]),
        )
        for i in range(draw(st.integers(0, 3))):
            body = "\n".join(draw(st.lists(st.one_of(line, st.text(max_size=30)), max_size=5)))
            files[f"Session1/dialog/EmoEvaluation/Ses01F_impro0{i}.txt"] = draw(st.one_of(st.just(body), st.binary()))
    elif corpus == "meld":
        meld_words = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "joy",
                      "anger", "Joey", "0", "x", "-1"]  # fmt: skip
        for split in draw(st.lists(st.sampled_from(["train", "dev", "test"]), unique=True, max_size=3)):
            files[f"{split}_sent_emo.csv"] = draw(contents(table_text(meld_words)))
        files["train_splits/dia0_utt0.mp4"] = draw(MEDIA_BYTES)
    else:  # mer2023 / dfew / merr: label files at the root
        name = {"mer2023": "train-label.csv", "dfew": "EmoLabel_DataSplit/test(single-labeled)/set_1.csv",
                "merr": "labels.txt"}[corpus]  # fmt: skip
        files[name] = draw(contents())
    return files


@pytest.mark.parametrize("corpus", ["ravdess", "crema-d", "iemocap", "meld", "mer2023", "dfew", "merr"])
@given(data=st.data(), strict=st.booleans())
def test_corpus_trees(workdir, corpus, data, strict):
    from emollm.data.corpora import CorpusFormatError, read_corpus

    root = Path(tempfile.mkdtemp(dir=workdir)) / "root"
    root.mkdir()
    for rel, content in data.draw(corpus_tree(corpus)).items():
        _write(root / rel, content)
    try:
        listing = read_corpus(corpus, root, strict=strict)
    except (CorpusFormatError, ValueError) as e:
        assert str(root) in str(e) or "root" in str(e) or corpus in str(e), str(e)
        return
    for r in listing.records:  # what is listed is a clip: a file that is there and not empty
        assert r.path is None or Path(r.path).stat().st_size > 0
    assert all(s.reason for s in listing.skipped)


# -------------------------------------------------------------------------------------------- checkpoint metadata

META_KEYS = ["format", "version", "backbone", "chat_format", "emollm_version", "llm_source", "files", "x"]


@st.composite
def checkpoint_json(draw) -> str:
    doc = draw(st.dictionaries(st.sampled_from(META_KEYS), JSONISH, max_size=6))
    if draw(st.booleans()):
        doc.update(format="emollm-checkpoint", version=draw(st.sampled_from([1, 2, 99, "1", -1])))
    return json.dumps(doc)


@given(meta=contents(checkpoint_json()), config=contents(merr_json()))
def test_checkpoint_metadata(workdir, meta, config):
    from emollm.checkpoints.format import read_checkpoint

    folder = Path(tempfile.mkdtemp(dir=workdir)) / "ckpt"
    _write(folder / "checkpoint.json", meta)
    _write(folder / "emollm_config.json", config)
    try:
        read_checkpoint(folder)
    except (FileNotFoundError, ValueError) as e:
        assert str(folder) in str(e), str(e)


PTH_HEADS = st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02", b"\x80\x05", b"\x10\x00\x00\x00\x00\x00\x00\x00{", b"{"])


@settings(max_examples=25 if PROFILE == "bounded" else 400)
@given(head=PTH_HEADS, tail=st.binary(max_size=300))
def test_released_checkpoint_bytes(workdir, head, tail):
    from emollm.checkpoints.published.released import read_released_state_dict

    check(read_released_state_dict, _write(_fresh(workdir, "released.pth"), head + tail), (ValueError,))


def test_the_strategies_reach_valid_files_too(workdir):
    """The near-valid generator is not only noise: a plain valid file of each kind parses."""
    from emollm.data.merr_files import read_label_txt
    from emollm.fusion.data import read_labels_csv

    assert read_labels_csv(_write(_fresh(workdir, "l.csv"), "name,label\na,happy\n"))[0]["label"] == "happy"
    assert read_label_txt(_write(_fresh(workdir, "l.txt"), "a 12 happy -10\n"))[0].label == "happy"
    assert set(string.ascii_letters) >= {"a"}
