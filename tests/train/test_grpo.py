"""``train.stage: grpo``: the loss pieces, the reference (LoRA disabled = base model), learning on the tiny config,
kill-and-resume reproducing an uninterrupted run, QLoRA (4-bit base through bitsandbytes on CPU), two-process DDP,
config checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from emollm.runconfig import load_config, validate
from emollm_train.grpo import GRPOBatch, completion_logp, completion_mask, group_advantages, grpo_loss, reference_logp
from emollm_train.sft import KILL_ENV, SFTRecipe, run

from .conftest import QUICK, REPO, TINY, python_bin, subprocess_env

TINY_GRPO = REPO / "configs" / "debug" / "tiny_grpo.yaml"


def _log(path: Path, kind: str = "train") -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> Path:
    """The tiny stage-1 checkpoint trained on labels only (the header command of tiny_grpo.yaml), ~10 s."""
    out = tmp_path_factory.mktemp("grpo") / "pretrain_emotion"
    cfg = load_config(TINY, [*QUICK, f"train.output_dir={out}", "data.tasks={emotion: 1.0}", "train.eval_every=0"])
    run(cfg)
    return out / "final"


# ------------------------------------------------------------------------------------------------------ pieces
def test_group_advantages_and_completion_mask():
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0, 2.0, 2.0, 2.0]), 4, 1e-4)
    assert torch.allclose(adv[:4], torch.tensor([1.0, -1.0, 1.0, -1.0]) / (0.57735 + 1e-4) * 0.5, atol=1e-4)
    assert torch.equal(adv[4:], torch.zeros(4))  # equal rewards: no signal
    tokens = torch.tensor([[5, 6, 2, 0], [5, 6, 7, 8], [2, 0, 0, 0]])
    assert completion_mask(tokens, [2]).int().tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_grpo_loss_clips_and_penalises_kl():
    mask = torch.ones(2, 3, dtype=torch.bool)
    b = GRPOBatch(None, None, {}, mask, torch.tensor([1.0, -1.0]), torch.zeros(2, 3), torch.zeros(2, 3),
                  torch.zeros(2), {})  # fmt: skip
    logp = torch.full((2, 3), 0.5, requires_grad=True)  # ratio e^0.5 = 1.65 > 1 + eps
    loss, stats = grpo_loss(logp, b, epsilon=0.2, beta=0.0)
    # positive advantage: clipped at 1.2 (no gradient); negative: min(-1.65, -1.2) = -1.65 -> loss 1.65
    assert loss.item() == pytest.approx((-1.2 + 1.6487) / 2, abs=1e-4)
    assert stats["clip_fraction"].item() == 1.0
    loss.backward()
    assert torch.all(logp.grad[0] == 0) and torch.all(logp.grad[1] > 0)
    loss_kl, stats = grpo_loss(logp.detach(), b, epsilon=0.2, beta=0.1)
    kl = torch.exp(torch.tensor(-0.5)) + 0.5 - 1  # k3 at ref - logp = -0.5
    assert stats["kl"].item() == pytest.approx(kl.item(), abs=1e-5)
    assert loss_kl.item() == pytest.approx(loss.item() + 0.1 * kl.item(), abs=1e-5)


def test_reference_is_the_adapter_disabled_policy():
    """The reference log-probs equal those of the same model built without LoRA; the policy's differ."""
    from emollm.backbones import get_backbone
    from emollm.model.lora import apply_lora
    from emollm_train.build import build_run_model

    cfg = load_config(TINY_GRPO, ["train.init_from=null"])
    torch.manual_seed(0)
    base, processor = build_run_model(cfg)
    torch.manual_seed(0)
    policy, _ = build_run_model(cfg)
    apply_lora(policy, cfg.train.lora, get_backbone(cfg.model.backbone).lora_targets)
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)  # peft starts B at 0 (adapter = identity); make it matter
    from emollm.data.synthetic import SyntheticEmotionData

    data = SyntheticEmotionData({m: 16 for m in cfg.model.modalities}, labels=cfg.data.labels, seed=0)
    samples, _ = data.split(2, split_seed=1, with_answer=False)
    enc = processor(samples, add_generation_prompt=True, padding_side="left")
    new = torch.randint(10, 200, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.bool)
    batch = GRPOBatch(torch.cat([enc.input_ids, new], 1), torch.cat([enc.attention_mask, mask.long()], 1),
                      enc.modality_inputs, mask, torch.zeros(2), None, None, torch.zeros(2), {})  # fmt: skip
    base.eval(), policy.eval()
    with torch.no_grad():
        want = completion_logp(base, batch)
        on = completion_logp(policy, batch)
    ref = reference_logp(policy, batch)
    assert torch.allclose(ref, want, atol=1e-5)
    assert not torch.allclose(on, want, atol=1e-3)
    with torch.no_grad():  # the adapter is on again afterwards
        assert torch.allclose(completion_logp(policy, batch), on)


# ----------------------------------------------------------------------------------------------------- training
def test_tiny_grpo_learns(tmp_path, stage1):
    out = tmp_path / "grpo"
    cfg = load_config(TINY_GRPO, [*QUICK, f"train.output_dir={out}", f"train.init_from={stage1}"])
    summary = run(cfg)
    assert summary["steps"] == 30 and (out / "final" / "adapter_model.safetensors").is_file()
    log = _log(out / "train_log.jsonl")
    for key in ("reward", "accuracy", "ov_f1", "length", "kl", "completion_length", "loss", "reward_std"):
        assert key in log[0], key
    rewards = [r["reward"] for r in log]
    fifth = len(rewards) // 5
    first, last = sum(rewards[:fifth]) / fifth, sum(rewards[-fifth:]) / fifth
    assert last > first, (first, last, rewards)
    assert all(r["kl"] >= 0 for r in log)


def test_kill_and_resume_reproduces_an_uninterrupted_run(tmp_path, stage1):
    common = [
        *QUICK,
        f"train.init_from={stage1}",
        "train.max_steps=4",
        "train.save_every=2",
        "train.batch_size=2",
        "train.grpo.group_size=4",
        "train.grpo.iterations=2",  # old log-probs from sampling time, ratio != 1 on the second update
        "train.lora.dropout=0.1",  # dropout RNG must be restored too
    ]
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    run(load_config(TINY_GRPO, [*common, f"train.output_dir={ref_out}"]))
    cmd = [python_bin(), "-m", "emollm.cli", "train", str(TINY_GRPO), *common, f"train.output_dir={out}", "-q"]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(**{KILL_ENV: "2"}), capture_output=True, text=True,
                          timeout=240)  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    run(load_config(TINY_GRPO, [*common, f"train.output_dir={out}"]))

    def records(path):
        return [(r["step"], r["reward"], r["loss"], r["kl"], r["completion_length"]) for r in _log(path)]

    assert records(out / "train_log.jsonl") == records(ref_out / "train_log.jsonl")
    for name in ("adapter_model.safetensors", "projectors.safetensors"):
        a, b = load_file(str(ref_out / "final" / name)), load_file(str(out / "final" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_grpo_with_a_4bit_base_moves_lora_only(tmp_path, stage1):
    """QLoRA GRPO: the stage-1 LLM saved as an HF folder, loaded in 4-bit nf4 (bitsandbytes on CPU); 2 steps change
    every LoRA weight and leave the quantized base weights bit-identical. The reference log-probs (adapter disabled)
    come from the 4-bit base."""
    llm, init = tmp_path / "llm", tmp_path / "init"
    shutil.copytree(stage1 / "llm", llm)  # config.json + model.safetensors: a plain HF folder
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(stage1 / name, llm / name)
    shutil.copytree(stage1, init, ignore=shutil.ignore_patterns("llm"))  # adapter + connectors, base from llm_path
    overrides = [
        *QUICK,
        f"train.output_dir={tmp_path / 'out'}",
        f"train.init_from={init}",
        "model.tiny=null",
        f"model.llm_path={llm}",
        "model.quantization=4bit",
        "train.max_steps=2",
        "train.save_every=0",
        "data.synthetic.num_val=0",
        "train.batch_size=4",
        "train.grpo.group_size=4",
    ]
    recipe = SFTRecipe(load_config(TINY_GRPO, overrides))
    recipe.setup()
    raw = recipe.raw_model
    base = raw.language_model.get_base_model()
    assert base.is_loaded_in_4bit and type(base.model.layers[0].mlp.up_proj.base_layer).__name__ == "Linear4bit"
    before = {n: p.detach().clone() for n, p in raw.language_model.named_parameters()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = recipe.train()
    recipe.cleanup()
    # sampling in eval mode must not leave bitsandbytes' grad-less CPU inference layout (gemv_4bit) for training
    assert not [w for w in caught if "autograd kernel was not registered" in str(w.message)]
    assert summary["steps"] == 2 and summary["last_loss"] == summary["last_loss"]
    after = dict(raw.language_model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    quantized = [n for n in before if before[n].dtype == torch.uint8]  # the packed nf4 weights
    assert lora and quantized
    assert all(not torch.equal(before[n], after[n].detach()) for n in lora), "a LoRA weight did not move"
    assert all(torch.equal(before[n], after[n].detach()) and not after[n].requires_grad for n in quantized)


def test_grpo_ddp_two_processes_end_with_identical_adapters(tmp_path, stage1):
    """Two real processes (accelerate launch, gloo on CPU, the shipped DDP config): each samples its own prompts with
    its own seed, gradients are averaged, so the adapters stay equal (``replicas.json``, checked by the recipe)."""
    out = tmp_path / "ddp"
    cmd = [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--config_file",
        str(REPO / "configs/accelerate/ddp.yaml"),
        "--num_processes",
        "2",
        "-m",
        "emollm.cli",
        "train",
        str(TINY_GRPO),
        *QUICK,
        f"train.output_dir={out}",
        f"train.init_from={stage1}",
        "train.max_steps=3",
        "train.save_every=0",
        "data.synthetic.num_val=0",
        "train.batch_size=4",
        "train.grpo.group_size=4",
        "-q",
    ]
    start = time.perf_counter()
    env = subprocess_env(ACCELERATE_USE_CPU="true")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    prints = json.loads((out / "replicas.json").read_text())["fingerprints"]
    assert len(prints) == 2 and prints[0] == prints[1]
    log = _log(out / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["samples"] == 2 * 4 * 4 for r in log)
    assert _log(out / "train_log.jsonl", "setup")[0]["world_size"] == 2
    stage1_adapter = load_file(str(stage1 / "adapter_model.safetensors"))
    trained = load_file(str(out / "final" / "adapter_model.safetensors"))
    assert any(not torch.equal(stage1_adapter[k], trained[k]) for k in trained)  # it did train
    assert elapsed < 60, f"2-process GRPO run took {elapsed:.0f} s"


# ------------------------------------------------------------------------------------------------------ configs
def test_grpo_config_checks():
    assert validate(load_config(TINY_GRPO)).ok
    assert validate(load_config(REPO / "configs" / "grpo" / "smollm2.yaml")).ok
    bad = load_config(TINY_GRPO, ["train.grpo.group_size=1", "train.grpo.rewards={acurracy: 1.0}",
                                  "train.trainable={projectors: true, llm: frozen}"])  # fmt: skip
    errors = "\n".join(validate(bad).errors)
    assert "train.grpo.group_size: must be >= 2" in errors
    assert "train.grpo.rewards.acurracy: unknown reward (did you mean 'accuracy'?)" in errors
    assert "needs trainable.llm=lora" in errors
    assert validate(load_config(TINY_GRPO, ["train.grpo.beta=0", "train.trainable.llm=full"])).ok
