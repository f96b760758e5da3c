"""Values that used to pass validation and fail later (issue 29): non-finite numbers anywhere in a config, ranges of
GRPO settings, and the same ranges at ``emollm plan`` (which printed negative memory that "fits") and
``emollm fusion train``. Every refusal is one line that starts with the dotted key (or the flag)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from emollm.runconfig import ConfigError, load_config, validate, validate_main
from emollm.utils.typed_config import bounds, check_fields, check_range, convert

from .conftest import REPO, TINY

TINY_GRPO = REPO / "configs" / "debug" / "tiny_grpo.yaml"

# A battery of hostile GRPO/training values: each is refused, naming its key, before any model is built.
HOSTILE_GRPO = [
    ("train.grpo.beta=.nan", "train.grpo.beta: must be a finite number"),
    ("train.grpo.beta=nan", "train.grpo.beta: must be a finite number"),
    ("train.lora_lr=.nan", "train.lora_lr: must be a finite number"),
    ("train.projector_lr=-.inf", "train.projector_lr: must be a finite number"),
    ("train.grpo.temperature=.nan", "train.grpo.temperature: must be a finite number"),
    ("train.grpo.top_p=.inf", "train.grpo.top_p: must be a finite number"),
    ("train.grpo.epsilon=.nan", "train.grpo.epsilon: must be a finite number"),
    ("train.grpo.rewards={accuracy: .inf}", "train.grpo.rewards.accuracy: must be a finite number"),
    ("train.grpo.rewards={accuracy: inf, format: 0.5}", "train.grpo.rewards.accuracy: must be a finite number"),
    ("train.grpo.std_eps=1e400", "train.grpo.std_eps: must be a finite number"),  # YAML reads 1e400 as inf
    ("train.max_grad_norm=.nan", "train.max_grad_norm: must be a finite number"),
    ("train.adam_betas=[0.9, .nan]", "train.adam_betas[1]: must be a finite number"),
    ("model.modalities.audio.encoder_options={scale: .nan}", "encoder_options.scale: must be a finite number"),
]


@pytest.mark.parametrize(("override", "message"), HOSTILE_GRPO, ids=[o for o, _ in HOSTILE_GRPO])
def test_non_finite_values_are_refused_at_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(TINY_GRPO, [override])


# Finite but out of range: validate() names the key (the run would fail or silently misbehave later).
OUT_OF_RANGE = [
    ("train.grpo.beta=-0.1", "train.grpo.beta: must be >= 0"),
    ("train.grpo.temperature=0", "temperature must be > 0"),
    ("train.grpo.top_p=1.5", "top_p in (0, 1]"),
    ("train.grpo.epsilon=1", "train.grpo.epsilon: must be in (0, 1)"),
    ("train.grpo.group_size=1", "train.grpo.group_size: must be >= 2"),
    ("train.grpo.max_completion_tokens=0", "train.grpo.max_completion_tokens: must be >= 1"),
    ("train.grpo.rewards={}", "train.grpo.rewards: empty"),
    ("train.lora_lr=0", "train.lora_lr: must be > 0"),
    ("train.batch_size=-1", "train.batch_size: must be >= 1"),
]


@pytest.mark.parametrize(("override", "message"), OUT_OF_RANGE, ids=[o for o, _ in OUT_OF_RANGE])
def test_out_of_range_grpo_values_are_errors(override, message):
    errors = validate(load_config(TINY_GRPO, [override])).errors
    assert any(message in e for e in errors), errors


def test_validate_cli_says_one_line_for_a_nan(capsys):
    assert validate_main([str(TINY_GRPO), "train.grpo.beta=.nan"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["emollm validate: train.grpo.beta: must be a finite number, got nan"]


def test_typed_config_bounds_and_opt_in_non_finite():
    @dataclasses.dataclass
    class Section:
        hidden: int = dataclasses.field(default=4, metadata=bounds(ge=1))
        rate: float = dataclasses.field(default=0.5, metadata=bounds(gt=0, lt=1))
        limit: float = dataclasses.field(default=math.inf, metadata=bounds(ge=0, finite=False))
        weights: dict[str, float] = dataclasses.field(default_factory=dict, metadata=bounds(ge=0))

        def __post_init__(self) -> None:
            check_fields(self, "s")

    assert convert(Section, {"limit": "inf"}, "s").limit == math.inf  # the field opted in
    for raw, message in [
        ({"hidden": 0}, "s.hidden: must be >= 1, got 0"),
        ({"rate": 1}, "s.rate: must be < 1, got 1"),
        ({"rate": "nan"}, "s.rate: must be a finite number"),
        ({"limit": -1}, "s.limit: must be >= 0, got -1"),
        ({"weights": {"a": -2}}, "s.weights.a: must be >= 0, got -2"),
    ]:
        with pytest.raises(ValueError, match=message):
            convert(Section, raw, "s")
    with pytest.raises(ValueError, match="s.hidden: must be >= 1"):  # built in Python: held to the same range
        Section(hidden=0)
    with pytest.raises(ValueError, match="--n: must be <= 10, got 11"):
        check_range("--n", 11, ge=1, le=10)
    check_range("--n", None, ge=1)  # not given: nothing to check


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train.batch_size=-1"], "train.batch_size: must be >= 1, got -1"),
        (["train.grad_accum=0"], "train.grad_accum: must be >= 1"),
        (["--answer-tokens", "-5"], "--answer-tokens: must be >= 1, got -5"),
        (["--gpus", "0"], "--gpus: must be >= 1, got 0"),
        (["--gpu-memory", "0"], "--gpu-memory: must be > 0, got 0"),
        (["train.lora_lr=.nan"], "train.lora_lr: must be a finite number"),
    ],
)
def test_plan_refuses_what_would_print_nonsense(args, message, capsys):
    from emollm.planning.memory import main

    assert main([str(TINY), *args]) == 1
    err = capsys.readouterr()
    assert message in err.err and "fits" not in err.out and err.out == ""


def test_fusion_config_ranges_name_the_key(tmp_path):
    from emollm.fusion.config import FusionConfigError
    from emollm.fusion.config import load_config as load_fusion

    cfg = tmp_path / "f.yaml"
    cfg.write_text("data: {labels: l.csv, features: {audio: a}}\n")
    for override, message in [
        ("model.hidden=0", "model.hidden: must be >= 1, got 0"),
        ("model.dropout=1", "model.dropout: must be < 1"),
        ("train.lr=.nan", "train.lr: must be a finite number"),
        ("train.epochs=-3", "train.epochs: must be >= 1"),
        ("train.threads=0", "train.threads: must be >= 1"),
        ("split.folds=1", "split.folds: must be >= 2"),
        ("data.steps=0", "data.steps: must be >= 1"),
    ]:
        with pytest.raises(FusionConfigError, match=message):
            load_fusion(cfg, [override])


def test_score_caps_the_bootstrap(tmp_path, capsys):
    from emollm_eval.score import MAX_RESAMPLES, main

    gold, pred = tmp_path / "gold.csv", tmp_path / "pred.csv"
    gold.write_text("name,discrete\na,happy\nb,sad\n")
    pred.write_text("name,discrete\na,happy\nb,happy\n")
    for n in ("100000000", "0", "-5", "1e3"):
        assert main(["mer2023", "--pred", str(pred), "--gold", str(gold), "--ci", "--n-resamples", n]) == 2
        assert "--n-resamples" in capsys.readouterr().err
    args = ["mer2023", "--pred", str(pred), "--gold", str(gold), "--ci", "--json"]
    assert main([*args, "--n-resamples", str(MAX_RESAMPLES)]) == 0
