"""Run config: YAML + overrides, strict keys with suggestions, type checks, validate(), and every shipped config."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from emollm.backbones import get_backbone, list_backbones
from emollm.runconfig import (
    ConfigError,
    RunConfig,
    apply_overrides,
    describe,
    field_docs,
    load_config,
    looks_like_test_split,
    validate,
    validate_main,
)

from .conftest import REPO, TINY

SHIPPED = (
    sorted((REPO / "configs").glob("pretrain/*.yaml"))
    + sorted((REPO / "configs").glob("instruct/*.yaml"))
    + sorted((REPO / "configs").glob("debug/*.yaml"))
)


# ------------------------------------------------------------------------------------------------ shipped configs


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    report = validate(cfg)
    assert report.ok, report.errors


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_starts_with_the_command(path):
    head = path.read_text().splitlines()[:6]
    assert head[0].startswith("# "), f"{path} must start with a comment"
    rel = path.relative_to(REPO).as_posix()
    assert any(("emollm train" in line or "-m emollm.cli train" in line) and rel in line for line in head), (
        f"{path}: the header must give the exact command running it"
    )


@pytest.mark.parametrize("backbone", list_backbones())
def test_each_backbone_has_a_pretrain_and_an_instruct_config(backbone):
    pre = load_config(REPO / "configs" / "pretrain" / f"{backbone}.yaml")
    ins = load_config(REPO / "configs" / "instruct" / f"{backbone}.yaml")
    assert pre.model.backbone == ins.model.backbone == backbone
    # Stage 1: projectors only at a LLaVA-like LR; stage 2: projectors + LoRA from stage 1's output.
    assert pre.train.stage == "pretrain" and pre.train.trainable is None and pre.train.projector_lr >= 1e-4
    assert ins.train.stage == "instruct" and ins.train.init_from == f"{pre.train.output_dir}/final"
    assert ins.train.lora.targets is None  # the registry's targets
    assert pre.model.modalities.keys() == ins.model.modalities.keys()
    if get_backbone(backbone).embedded is None:
        assert pre.model.llm_path and ins.model.llm_path


def test_accelerate_and_deepspeed_configs_parse():
    acc = REPO / "configs" / "accelerate"
    for name in ("single", "ddp", "zero2", "zero3"):
        data = yaml.safe_load((acc / f"{name}.yaml").read_text())
        assert data["compute_environment"] == "LOCAL_MACHINE"
        if name.startswith("zero"):
            assert data["distributed_type"] == "DEEPSPEED"
            ds_file = REPO / data["deepspeed_config"]["deepspeed_config_file"]
            ds = json.loads(ds_file.read_text())
            assert ds["zero_optimization"]["stage"] == int(name[-1])
            assert ds["train_micro_batch_size_per_gpu"] == "auto"  # filled from the run config


# ------------------------------------------------------------------------------------------------ loading


def test_overrides_are_typed_and_nested():
    cfg = load_config(
        TINY,
        [
            "train.lora_lr=1e-4",
            "train.lora.r=4",
            "model.tiny.hidden=32",
            "data.labels=[a, b]",
            "train.max_steps=null",
            "train.trainable.llm=full",
            "data.tasks.reason=0.5",
        ],
    )
    assert cfg.train.lora_lr == 1e-4 and isinstance(cfg.train.lora_lr, float)  # PyYAML reads 1e-4 as a string
    assert cfg.train.lora.r == 4 and cfg.model.tiny.hidden == 32 and cfg.data.labels == ["a", "b"]
    assert cfg.train.max_steps is None and cfg.train.trainable.llm == "full"
    assert cfg.data.tasks == {"emotion": 1.0, "caption": 0.5, "reason": 0.5}


def test_instruction_pools_merge_into_the_defaults():
    cfg = load_config(None, ["data.instructions.emotion=['Which of {labels}?']"])
    assert cfg.data.instructions["emotion"] == ["Which of {labels}?"]
    assert len(cfg.data.instructions["reason"]) == 5  # Emotion-LLaMA's pool kept


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lr=1", "train.lr: unknown key (did you mean 'lora' or 'projector_lr' or 'lora_lr'?)"),
        ("trian.seed=1", "trian: unknown key (did you mean 'train'?)"),
        ("data.format=merrjson", "data.format: 'merrjson' is not allowed (did you mean 'merr_json'"),
        ("train.batch_size=4.5", "train.batch_size: expected an integer, got 4.5"),
        ("train.gradient_checkpointing=yes please", "train.gradient_checkpointing: expected true or false"),
        ("model.modalities.face.projector.kindd=linear", "model.modalities.face.projector.kindd: unknown key"),
        ("train.logging.tensorboard=maybe", "train.logging.tensorboard: expected"),
        ("data.aux=[{pth: x.csv}]", "data.aux[0].pth: unknown key (did you mean 'path'?)"),
    ],
)
def test_bad_keys_and_values_name_the_key(override, expected):
    with pytest.raises(ConfigError) as e:
        load_config(TINY, [override])
    assert expected in str(e.value)


def test_unknown_key_lists_the_allowed_keys():
    with pytest.raises(ConfigError, match="allowed keys under train: stage, trainable, lora"):
        RunConfig.from_dict({"train": {"learning_rate": 1}})


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["train.lr"])
    with pytest.raises(ConfigError, match="empty key part"):
        apply_overrides({}, ["train..lr=1"])


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(TINY, ["train.lora.r=3"])
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


# ------------------------------------------------------------------------------------------------ validate


def _errors(overrides, path=TINY):
    return validate(load_config(path, overrides)).errors


@pytest.mark.parametrize(
    "val", ["data/MER2023/relative_test3_NCEV.txt", "dfew/set_1_test.csv", "split/test/x.jsonl", "Test.jsonl"]
)
def test_a_test_split_is_refused_for_model_selection(val):
    errs = _errors(
        [
            "data.format=jsonl",
            "data.train=train.jsonl",
            f"data.val={val}",
            "data.feature_root=f",
            *(f"model.modalities.{m}.feature_dir={m}" for m in ("face", "video", "audio")),
        ]
    )
    assert any(e.startswith("data.val:") and "test split" in e for e in errs), errs


def test_test_detection_has_no_false_positives():
    assert not looks_like_test_split("data/latest/val.jsonl")
    assert not looks_like_test_split("contest_val.jsonl")
    assert not looks_like_test_split("/tmp/pytest-of-me/test_resume0/val.jsonl")  # pytest folders
    assert not looks_like_test_split("repo/tests/assets/val.jsonl")
    assert looks_like_test_split("relative_test3_NCEV.txt")
    assert looks_like_test_split("DFEW/test(single-labeled)/set_1.csv")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["model.backbone=llama4"], "model.backbone: unknown backbone 'llama4' (did you mean 'llama3'"),
        (["model.tiny=null", "model.backbone=llama2"], "model.llm_path: backbone 'llama2'"),
        (["data.tasks={emotion: 1, reasoning: 1}"], "data.tasks.reasoning: unknown task (did you mean 'reason'?)"),
        (["data.instructions.caption=[]"], "data.instructions.caption: task 'caption' is in the pool but has no"),
        (["data.instructions.emotion=['Pick one of {label_list}']"], "unknown placeholder(s) ['label_list']"),
        (["data.prompt_template={media} {task}"], "data.prompt_template: '{media} {task}' must contain {instruction}"),
        (["data.format=ncev", "data.train=x.txt", "data.feature_root=f"], "need text targets"),
        (["data.format=jsonl", "data.train=x.jsonl"], "data.feature_root: required"),
        (["data.streaming=true"], "data.streaming: only for data.format=jsonl"),
        (
            [
                "data.format=jsonl",
                "data.train=x.jsonl",
                "data.feature_root=f",
                "data.streaming=true",
                "train.max_steps=null",
            ],
            "train.max_steps: a streamed data set has no known length",
        ),
        (["data.modality_dropout=1.0"], "data.modality_dropout: must be in [0, 1)"),
        (["model.modalities.face.projector.kind=mlp3x"], "unknown projector 'mlp3x'"),
        (["train.best_metric=val_accuracy", "data.val_tasks=[reason]"], "needs 'emotion' in data.val_tasks"),
        (["model.quantization=4bit"], "model.quantization: needs real weights"),
        (["data.aux=[{path: a.csv, label_map: {joy: happiness}}]"], "maps to ['happiness'], which are not in"),
        (["train.trainable={projectors: false, llm: frozen}"], "train.trainable: nothing would train"),
        (["train.logging.wandb=true"], "train.logging.wandb"),
    ],
)
def test_validate_names_the_key(overrides, fragment):
    errs = _errors(overrides)
    if fragment == "train.logging.wandb" and not errs:
        pytest.skip("wandb is installed here")
    assert any(fragment in e for e in errs), errs


def test_validate_warns_when_stage_2_has_no_init_from():
    report = validate(load_config(TINY, ["train.stage=instruct"]))
    assert report.ok and any("train.init_from" in w for w in report.warnings)


def test_check_paths(tmp_path):
    cfg = load_config(TINY, ["train.init_from=" + str(tmp_path / "nope")])
    assert validate(cfg).ok
    assert any("train.init_from" in e for e in validate(cfg, check_paths=True).errors)


def test_projector_kinds_match_the_core():
    from emollm.model.projectors import PROJECTOR_KINDS
    from emollm.runconfig import _PROJECTOR_KINDS

    assert tuple(_PROJECTOR_KINDS) == tuple(PROJECTOR_KINDS)


def test_validate_does_not_import_torch():
    code = (
        "import sys; from emollm.runconfig import load_config, validate; "
        f"r = validate(load_config({str(TINY)!r})); assert r.ok, r.errors; "
        "assert 'torch' not in sys.modules, 'validate imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ------------------------------------------------------------------------------------------------ CLI + docs


def test_validate_cli(capsys):
    assert validate_main([str(TINY)]) == 0
    assert validate_main([str(TINY), "train.max_steps=0"]) == 1
    assert "train.max_steps: must be >= 1" in capsys.readouterr().err
    assert validate_main([str(TINY), "--print", "train.seed=7"]) == 0
    assert "seed: 7" in capsys.readouterr().out


def test_schema_lists_every_key_with_its_doc(capsys):
    assert validate_main(["--schema"]) == 0
    out = capsys.readouterr().out
    for key in (
        "train.projector_lr (float, default 0.001)",
        "data.label_order",
        "model.modalities.<name>.feature_dir",
        "data.aux[i].ratio",
        "train.lora.r",
        "train.logging.tensorboard",
    ):
        assert key in out
    lines = describe()
    assert all(": " in line for line in lines)
    from emollm import runconfig

    for cls in (runconfig.ModelConfig, runconfig.DataConfig, runconfig.TrainConfig):
        import dataclasses

        missing = [f.name for f in dataclasses.fields(cls) if f.name not in field_docs(cls)]
        assert not missing, f"{cls.__name__} fields without an attribute docstring: {missing}"


def test_cli_dispatch_has_train_and_validate():
    from emollm.cli import COMMANDS

    assert COMMANDS["train"][:2] == ("emollm_train.sft", "main")
    assert COMMANDS["validate"][:2] == ("emollm.runconfig", "validate_main")
