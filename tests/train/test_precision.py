"""Training precision: ``train.mixed_precision: auto`` per device, bf16 autocast on the tiny config (loss curve close
to fp32, checkpoints that reload bit-identically), and ``no`` from the CLI and from YAML."""

from __future__ import annotations

import pytest
import torch

import emollm.model.precision
from emollm.runconfig import ConfigError, load_config
from emollm_train.monitor import read_log
from emollm_train.runtime import resolve_mixed_precision

from .conftest import QUICK, TINY

# 24 steps of the tiny config (lr 1e-2). Measured on an AVX512-BF16 CPU: step-1 loss (forward rounding only) 0.12%
# apart, the largest step 1.4% apart after 16 steps of drift. bf16 keeps 8 significant bits (relative rounding 2^-9
# per matmul input), so a few tenths of a percent per forward plus drift along the trajectory; 5% leaves 3.5x room
# and still catches a broken autocast (an fp16 overflow, a loss computed in bf16: off by far more, or NaN).
LOSS_RTOL = 0.05


@pytest.fixture
def native_bf16(monkeypatch):
    """``native_bf16(flag)``: pretend this CPU has (or lacks) native bf16."""

    def _set(flag: bool) -> None:
        monkeypatch.setattr(emollm.model.precision, "cpu_has_native_bf16", lambda: flag)

    return _set


def test_auto_follows_the_cpu(native_bf16):
    auto = load_config(TINY).train.mixed_precision
    assert auto == "auto"
    native_bf16(True)
    assert resolve_mixed_precision(auto, cuda=False)[0] == "bf16"
    assert resolve_mixed_precision(auto, cuda=False, deepspeed=True)[0] == "no"  # DeepSpeed's bf16 casts weights
    native_bf16(False)
    value, why = resolve_mixed_precision(auto, cuda=False)
    assert value == "no" and "no native bf16" in why
    for explicit in ("no", "bf16"):  # an explicit value wins on any CPU
        for flag in (True, False):
            native_bf16(flag)
            assert resolve_mixed_precision(explicit, cuda=False)[0] == explicit
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve_mixed_precision("fp16", cuda=False)


@pytest.mark.parametrize("value", ["no", "off", "false"])
def test_no_from_yaml_and_override_wins_over_native_bf16(tmp_path, native_bf16, value):
    native_bf16(True)
    yaml = tmp_path / "mp.yaml"
    yaml.write_text(f"train:\n  mixed_precision: {value}\n")  # YAML 1.1 reads these as false
    for cfg in (load_config(yaml), load_config(TINY, [f"train.mixed_precision={value}"])):
        assert cfg.train.mixed_precision == "no"
        assert resolve_mixed_precision(cfg.train.mixed_precision, cuda=False)[0] == "no"


def test_no_from_the_cli_is_recorded(tmp_path, native_bf16, capsys):
    from emollm.cli import main

    native_bf16(True)
    out = tmp_path / "run"
    args = [*QUICK, f"train.output_dir={out}", "train.max_steps=2", "train.save_every=0", "train.eval_every=0"]
    assert main(["train", str(TINY), *args, "train.mixed_precision=no", "-q"]) == 0
    setup = read_log(out / "train_log.jsonl", "setup")[-1]
    assert setup["mixed_precision"] == "no" and setup["mixed_precision_reason"] == "train.mixed_precision=no"


def _losses(out):
    return [r["loss"] for r in read_log(out / "train_log.jsonl", "train")]


def test_bf16_loss_curve_stays_close_to_fp32(tmp_path, run_tiny, native_bf16):
    """Same seed, data and steps; bf16 autocast (via ``auto`` on a native-bf16 CPU) against fp32."""
    common = ["train.save_every=0", "train.eval_every=0"]
    _, fp32_out = run_tiny([*common, "train.mixed_precision=no"], out=tmp_path / "fp32")
    native_bf16(True)
    _, bf16_out = run_tiny(common, out=tmp_path / "bf16")  # auto
    setup = read_log(bf16_out / "train_log.jsonl", "setup")[-1]
    assert setup["mixed_precision"] == "bf16" and setup["mixed_precision_reason"].startswith("auto: this CPU has")
    fp32, bf16 = _losses(fp32_out), _losses(bf16_out)
    assert len(fp32) == len(bf16) == 24
    assert fp32 != bf16  # autocast did run
    assert bf16 == pytest.approx(fp32, rel=LOSS_RTOL)
    assert sum(bf16[-4:]) < 0.6 * sum(bf16[:4])  # and it learns like fp32 (test_sft's criterion)


def bf16_config(out, *, steps: int, eval_every: int):
    """The tiny config trained ``steps`` steps in bf16 into ``out``, validated every ``eval_every`` steps."""
    overrides = [f"train.output_dir={out}", "train.mixed_precision=bf16", f"train.max_steps={steps}"]
    return load_config(TINY, [*QUICK, *overrides, "train.save_every=0", f"train.eval_every={eval_every}"])


def test_bf16_checkpoint_reloads_bit_identically(tmp_path):
    """Weights stay fp32 under autocast: the saved checkpoint reloads to the same tensors and the same logits."""
    from emollm.checkpoints import load_model
    from emollm.data.synthetic import SyntheticEmotionData
    from emollm.model.precision import autocast
    from emollm_train.sft import SFTRecipe

    out = tmp_path / "run"
    cfg = bf16_config(out, steps=4, eval_every=0)
    recipe = SFTRecipe(cfg)
    try:
        recipe.setup()
        assert recipe.accelerator.mixed_precision == "bf16"
        recipe.train()
        trained = recipe.raw_model.eval()
        reloaded, processor = load_model(out / "final")
        a, b = trained.state_dict(), reloaded.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        assert all(p.dtype == torch.float32 for p in reloaded.parameters())

        data = SyntheticEmotionData({m: 16 for m in ("face", "video", "audio")}, labels=list(cfg.data.labels))
        samples, _ = data.split(3, split_seed=1, with_answer=False)
        batch = processor(samples, add_generation_prompt=True, padding_side="left")
        args = (batch.input_ids, batch.attention_mask)
        with torch.no_grad():
            fp32 = [
                m.language_model(inputs_embeds=m.embed(batch.input_ids, batch.modality_inputs), attention_mask=args[1])
                for m in (trained, reloaded)
            ]
            bf16_trained = trained(*args, modality_inputs=batch.modality_inputs).logits  # accelerate's autocast
            with autocast("bf16"):
                bf16_reloaded = reloaded(*args, modality_inputs=batch.modality_inputs).logits
        assert torch.equal(fp32[0].logits, fp32[1].logits)
        assert bf16_reloaded.dtype == torch.bfloat16
        assert torch.equal(bf16_trained.float(), bf16_reloaded.float())
    finally:
        recipe.cleanup()


def test_validation_answers_are_generated_under_the_runs_autocast(tmp_path, monkeypatch):
    """The accuracy's greedy answers come from the unwrapped model, which has no autocast of its own: the loop puts
    the run's autocast around them, so a bf16 run is validated in bf16, as it trains."""
    import emollm.model.generation
    from emollm_train.sft import SFTRecipe

    seen: list[tuple[bool, torch.dtype]] = []
    real_chat = emollm.model.generation.chat

    def recording_chat(*args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return real_chat(*args, **kwargs)

    monkeypatch.setattr(emollm.model.generation, "chat", recording_chat)
    recipe = SFTRecipe(bf16_config(tmp_path / "run", steps=2, eval_every=2))
    try:
        recipe.setup()
        recipe.train()
    finally:
        recipe.cleanup()
    assert seen and all(seen_ == (True, torch.bfloat16) for seen_ in seen)
