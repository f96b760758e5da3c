"""Hostile-user cases of configs and training data: each ends in one clear line naming the file and the fix, from
``emollm validate --check-paths`` and from ``emollm train`` (exit 2, no traceback unless ``--debug``)."""

from __future__ import annotations

import json
import logging
import subprocess

import numpy as np
import pytest

from emollm.data.datasets import DataError, FeatureFiles, StreamingInstructions, feature_problem, load_records
from emollm.runconfig import ConfigError, load_config, validate_main
from emollm.utils import typed_config

from .conftest import FEATURE_DIRS, QUICK, REPO, TINY, merr_overrides, python_bin, subprocess_env, write_merr_dataset

DIMS = {m: 16 for m in FEATURE_DIRS}


def _train(argv, capsys) -> tuple[int, str]:
    from emollm_train.sft import main

    rc = main(argv)
    return rc, capsys.readouterr().err


# ================================================================================================ config keys


def test_an_empty_config_file_is_an_error(tmp_path, capsys):
    for text in ("", "\n# only a comment\n"):
        cfg = tmp_path / "empty.yaml"
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=r"empty\.yaml: the config file is empty"):
            load_config(cfg)
        assert validate_main([str(cfg)]) == 1
        assert f"{cfg}: the config file is empty" in capsys.readouterr().err
        rc, err = _train([str(cfg)], capsys)
        assert rc == 2 and err.count("\n") == 1 and "the config file is empty" in err


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("train:\n  max_steps: 2\ndata:\n  format: synthetic\ntrain:\n  seed: 1\n", "train", (1, 5)),
        ("train:\n  max_steps: 2\n  seed: 1\n  max_steps: 3\n", "max_steps", (2, 4)),
        ("model:\n  modalities:\n    face: {feature_dim: 8, feature_dim: 16}\n", "feature_dim", (3, 3)),
    ],
)
def test_a_duplicate_key_names_the_key_and_both_lines(tmp_path, text, key, lines):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    msg = str(info.value)
    assert f"{cfg}:{lines[1]}: duplicate key {key!r} (first on line {lines[0]})" in msg and "\n" not in msg


def test_duplicate_keys_are_refused_for_every_typed_config(tmp_path):
    """The shared loader serves the MERR-build, eval and bench configs as well; merge keys may still override."""
    cfg = tmp_path / "any.yaml"
    cfg.write_text("a: 1\nb: 2\na: 3\n")
    with pytest.raises(KeyError, match="duplicate key 'a'"):
        typed_config.load_yaml_mapping(cfg, error=KeyError)
    cfg.write_text("base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  x: 5\n")
    assert typed_config.load_yaml_mapping(cfg)["derived"] == {"x": 5, "y": 2}


@pytest.mark.parametrize(("value", "expected"), [("no", "no"), ("false", "no"), ("off", "no"), ("'no'", "no")])
def test_mixed_precision_no_survives_yaml_booleans(tmp_path, value, expected):
    assert load_config(TINY, [f"train.mixed_precision={value}"]).train.mixed_precision == expected
    cfg = tmp_path / "mp.yaml"
    cfg.write_text(f"train:\n  mixed_precision: {value}\n")
    loaded = load_config(cfg)
    assert loaded.train.mixed_precision == expected
    assert load_config(None, [f"train.mixed_precision={loaded.train.mixed_precision}"]).train.mixed_precision == "no"


def test_mixed_precision_keeps_its_other_values():
    for value in ("bf16", "fp16", "auto"):
        assert load_config(TINY, [f"train.mixed_precision={value}"]).train.mixed_precision == value
    with pytest.raises(ConfigError, match="train.mixed_precision: True is not allowed"):
        load_config(TINY, ["train.mixed_precision=true"])


def test_unknown_keys_stay_errors(tmp_path):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("train:\n  max_step: 3\n")
    with pytest.raises(ConfigError, match="train.max_step: unknown key"):
        load_config(cfg)


# ================================================================================ data faults: validate + train


def _bad_npy(path, kind):
    if kind == "wrong_dim":
        np.save(path, np.zeros(8, np.float32))
    elif kind == "nan":
        a = np.zeros((3, 16), np.float32)
        a[1, 2] = np.nan
        np.save(path, a)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        np.save(path, np.zeros((4, 16), np.float32))
        path.write_bytes(path.read_bytes()[:-40])
    elif kind == "string":
        np.save(path, np.array(["a"] * 16))


def _fault(root, data, case):
    """Break the generated data set as ``case`` says; returns (extra overrides, the file named, a message part)."""
    face0 = root / FEATURE_DIRS["face"] / "sample_00000000.npy"
    if case.startswith("npy_"):
        _bad_npy(face0, case[4:])
        part = {
            "npy_wrong_dim": "width 8, but the model expects 16",
            "npy_nan": "NaN or infinite face features (frame 1)",
            "npy_empty": "feature file is empty (0 bytes)",
            "npy_truncated": "damaged or truncated",
            "npy_string": "values, not numbers",
        }[case]
        return [], face0, part
    jsonl = data["jsonl"]
    lines = jsonl.read_bytes().splitlines(keepends=True)
    if case == "corrupt_jsonl":
        lines[2] = b'{"name": "sample_00000002", "emotion": happy}\n'
        jsonl.write_bytes(b"".join(lines))
        return [], f"{jsonl}:3", "invalid JSON"
    if case == "latin1":
        lines[4] = lines[4].replace(b"I told you", b"Caf\xe9 told you")
        jsonl.write_bytes(b"".join(lines))
        return [], f"{jsonl}:5", "byte 0xe9 at column"
    if case == "empty_file":
        jsonl.write_bytes(b"")
        return [], jsonl, "the file is empty"
    if case == "merr_corrupt":
        data["coarse"].write_text(data["coarse"].read_text()[:-30])
        return ["data.format=merr_json", f"data.train={data['coarse']}"], data["coarse"], "invalid JSON"
    if case == "merr_latin1":
        data["coarse"].write_bytes(data["coarse"].read_bytes().replace(b"the tone", b"le t\xf4n", 1))
        return ["data.format=merr_json", f"data.train={data['coarse']}"], f"{data['coarse']}:", "not UTF-8"
    if case == "ncev_empty":
        data["ncev"].write_text("\n\n")
        return ["data.format=ncev", f"data.train={data['ncev']}", "data.tasks={emotion: 1}"], data["ncev"], "empty"
    if case == "transcripts_latin1":
        t = data["transcripts"]
        t.write_bytes(t.read_bytes().replace(b"I told you about it 7", b"J'ai \xe9t\xe9", 1))
        return [], f"{t}:9", "not UTF-8"
    if case == "labels_empty":
        return ["data.labels=[]"], "data.labels", "list the emotion labels"
    if case == "all_labels_unknown":
        jsonl.write_text(jsonl.read_text().replace('"emotion": "', '"emotion": "x'))
        return ["data.tasks={emotion: 1}"], jsonl, "labels not in data.labels: 'xneutral'"
    raise AssertionError(case)


CASES = [
    "corrupt_jsonl",
    "npy_wrong_dim",
    "npy_nan",
    "npy_empty",
    "npy_truncated",
    "npy_string",
    "latin1",
    "empty_file",
    "labels_empty",
    "merr_corrupt",
    "merr_latin1",
    "ncev_empty",
    "transcripts_latin1",
    "all_labels_unknown",
]


@pytest.mark.parametrize("case", CASES)
def test_validate_and_train_refuse_bad_data_in_one_line(tmp_path, capsys, case):
    root = tmp_path / "merr"
    data = write_merr_dataset(root, n=24)
    extra, named, part = _fault(root, data, case)
    overrides = [*merr_overrides(data, root, "jsonl", "jsonl"), *extra]
    assert validate_main([str(TINY), *overrides, "--check-paths"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert str(named) in errors[0] and part in errors[0], errors[0]
    out = tmp_path / "run"
    rc, err = _train([str(TINY), *QUICK, f"train.output_dir={out}", "train.max_steps=2", *overrides, "-q"], capsys)
    assert rc == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("emollm train: ") and str(named) in last and part in last, err


def test_train_debug_shows_the_traceback(tmp_path, capsys):
    root = tmp_path / "merr"
    data = write_merr_dataset(root, n=24)
    _fault(root, data, "corrupt_jsonl")
    argv = [str(TINY), *merr_overrides(data, root, "jsonl", "jsonl"), f"train.output_dir={tmp_path / 'run'}"]
    from emollm_train.sft import main

    with pytest.raises(ConfigError, match="invalid JSON"):
        main([*argv, "--debug"])


def test_a_bad_feature_file_beyond_the_checked_rows_stops_training_in_one_line(tmp_path, capsys):
    """validate opens the first 64 rows' features; a bad file further on stops the run when its batch comes."""
    root = tmp_path / "merr"
    data = write_merr_dataset(root, n=80)
    _bad_npy(root / FEATURE_DIRS["audio"] / "sample_00000075.npy", "nan")
    overrides = [*merr_overrides(data, root, "jsonl", "jsonl"), "data.val_fraction=0", "train.batch_size=16"]
    assert validate_main([str(TINY), *overrides, "--check-paths"]) == 0
    capsys.readouterr()
    rc, err = _train(
        [str(TINY), *QUICK, f"train.output_dir={tmp_path / 'run'}", "train.max_steps=null", *overrides, "-q"], capsys
    )
    assert rc == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("emollm train: ") and "sample_00000075.npy: NaN" in err


# ======================================================================== the train-time readers name the line


@pytest.fixture
def merr_set(tmp_path):
    root = tmp_path / "merr"
    return root, write_merr_dataset(root, n=12)


@pytest.mark.parametrize("case", ["corrupt_jsonl", "latin1", "empty_file"])
@pytest.mark.parametrize("streaming", [False, True])
def test_load_records_names_the_bad_line(merr_set, tmp_path, case, streaming):
    root, data = merr_set
    _, named, part = _fault(root, data, case)
    with pytest.raises(DataError) as info:
        ds = load_records("jsonl", str(data["jsonl"]), streaming=streaming, cache_dir=str(tmp_path / "c"))
        from emollm.data.datasets import PromptBuilder
        from emollm.runconfig import DataConfig

        stream = StreamingInstructions(
            ds, FeatureFiles(root, FEATURE_DIRS, DIMS), PromptBuilder(DataConfig(), []), {"emotion": 1.0}, 0,
            source=str(data["jsonl"]),
        )  # fmt: skip
        list(stream.iterate(0))
    assert str(named) in str(info.value) and part in str(info.value)


def test_feature_files_raise_a_data_error_naming_the_fix(merr_set):
    root, _ = merr_set
    for kind, part in [("nan", "NaN"), ("string", "not numbers"), ("truncated", "truncated"), ("wrong_dim", "16")]:
        _bad_npy(root / FEATURE_DIRS["video"] / "sample_00000003.npy", kind)
        with pytest.raises(DataError, match=part) as info:
            FeatureFiles(root, FEATURE_DIRS, DIMS).load("sample_00000003")
        assert "sample_00000003.npy" in str(info.value) and ("re-extract" in str(info.value))
    assert feature_problem(root / FEATURE_DIRS["face"] / "sample_00000001.npy", 16, "face") is None


# ============================================================================================== unknown labels


def test_unknown_training_labels_are_counted_and_reported(tmp_path, capsys, caplog, run_tiny):
    root = tmp_path / "merr"
    data = write_merr_dataset(root, n=30)
    rows = [json.loads(line) for line in data["jsonl"].read_text().splitlines()]
    for i in (1, 7, 13):
        rows[i]["emotion"] = "joy"
    rows[2]["emotion"] = "contempt"
    data["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = [*merr_overrides(data, root, "jsonl", "jsonl"), "data.val_fraction=0", "data.tasks={emotion: 1}"]
    assert validate_main([str(TINY), *overrides, "--check-paths"]) == 0
    err = capsys.readouterr().err
    assert "4 of the 30 records" in err and "'joy' x3, 'contempt' x1" in err
    with caplog.at_level(logging.WARNING, logger="emollm.train"):
        run_tiny([*overrides, "train.max_steps=1", "train.eval_every=0", "train.save_every=0"])
    warning = next(r.getMessage() for r in caplog.records if "not in data.labels" in r.getMessage())
    assert "4 of 30 training samples" in warning and "'joy' x3, 'contempt' x1" in warning and "4 skipped" in warning


# ============================================================================================ datasets' caches


def test_training_leaves_no_dataset_cache_in_the_home_folder(tmp_path):
    root = tmp_path / "merr"
    data = write_merr_dataset(root, n=16)
    home = tmp_path / "home"
    home.mkdir()
    env = subprocess_env(HOME=str(home))
    for var in ("HF_HOME", "HF_DATASETS_CACHE", "XDG_CACHE_HOME"):
        env.pop(var, None)
    out = tmp_path / "run"
    cmd = [python_bin(), "-m", "emollm.cli", "train", str(TINY), *QUICK, f"train.output_dir={out}", "-q"]
    cmd += [*merr_overrides(data, root, "jsonl", "jsonl"), "train.max_steps=1", "train.eval_every=0"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = [str(p.relative_to(home)) for p in home.rglob("*")]
    assert not [p for p in written if "datasets" in p], written
    assert (out / "final").is_dir() and not (out / ".datasets-cache").exists()
    assert not (home / ".cache" / "huggingface" / "datasets").exists(), written
