"""The recipe end to end on the tiny config: both stages, checkpoints, kill + resume, best-on-validation, monitoring."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from emollm.runconfig import load_config
from emollm_train.monitor import read_log
from emollm_train.sft import KILL_ENV, SFTRecipe

from .conftest import QUICK, REPO, TINY, TINY_INSTRUCT, merr_overrides, python_bin, subprocess_env, write_merr_dataset


def _mean(xs):
    return sum(xs) / len(xs)


@pytest.fixture(scope="module")
def two_stages(tmp_path_factory):
    """Stage 1 then stage 2 of the shipped debug configs (24 steps each), as `emollm train` would run them."""
    from emollm_train.sft import run

    root = tmp_path_factory.mktemp("stages")
    pre, ins = root / "pretrain", root / "instruct"
    s1 = run(load_config(TINY, [*QUICK, f"train.output_dir={pre}", "train.logging.tensorboard=auto"]))
    s2 = run(load_config(TINY_INSTRUCT, [*QUICK, f"train.output_dir={ins}", f"train.init_from={pre}/final"]))
    return pre, ins, s1, s2


def test_stage_1_loss_goes_down(two_stages):
    pre, _, s1, _ = two_stages
    losses = [r["loss"] for r in read_log(pre / "train_log.jsonl")]
    assert len(losses) == 24 and s1["steps"] == 24
    assert _mean(losses[-4:]) < 0.6 * _mean(losses[:4]), losses
    evals = read_log(pre / "train_log.jsonl", "eval")
    assert [e["step"] for e in evals] == [12, 24] and evals[1]["val_loss"] < evals[0]["val_loss"]


def test_stage_2_starts_from_stage_1_weights(two_stages):
    pre, ins, _, s2 = two_stages
    setup = read_log(ins / "train_log.jsonl", "setup")[0]
    assert setup["init_from"] == str(pre / "final") and setup["projectors_missing"] == [] and setup["adapter"]
    # Rebuild stage 2's model exactly as its run did (no training): its projectors are stage 1's final ones.
    recipe = SFTRecipe(
        load_config(TINY_INSTRUCT, [*QUICK, f"train.output_dir={ins}-probe", f"train.init_from={pre}/final"])
    )
    recipe.setup()
    stage1 = load_file(str(pre / "final" / "projectors.safetensors"))
    for prefix, module in recipe.raw_model.connector_modules().items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, stage1[f"{prefix}.{key}"]), key
    recipe.cleanup()
    losses = [r["loss"] for r in read_log(ins / "train_log.jsonl")]
    assert _mean(losses[-4:]) < _mean(losses[:4])
    assert s2["best"]["metric"] == "val_accuracy"


def test_checkpoint_folders(two_stages):
    pre, ins, _, _ = two_stages
    steps = sorted(p.name for p in (ins / "checkpoints").iterdir())
    assert steps == ["step-00000016", "step-00000024"]  # save_every 8, keep_last 2
    ck = ins / "checkpoints" / "step-00000024"
    for name in (
        "checkpoint.json",
        "projectors.safetensors",
        "adapter_model.safetensors",
        "trainer_state.json",
        "optimizer.pt",
        "scheduler.json",
        "rng_state_rank0.json",
        "run_config.json",
        "llm",
    ):
        assert (ck / name).exists(), name
    assert not list((ins / "checkpoints").glob(".*"))  # no partial leftovers
    best = json.loads((ins / "best" / "best.json").read_text())
    evals = {e["step"]: e for e in read_log(ins / "train_log.jsonl", "eval")}
    assert best["value"] == max(e["val_accuracy"] for e in evals.values())
    assert (pre / "tensorboard").is_dir() == bool(__import__("importlib").util.find_spec("tensorboard"))
    assert (pre / "config.yaml").read_text().startswith("# resolved config")
    assert load_config(pre / "config.yaml").train.output_dir == str(pre)


def test_final_checkpoint_answers_a_prompt(two_stages):
    from emollm.checkpoints import load_model
    from emollm.data.synthetic import SyntheticEmotionData
    from emollm.model.generation import chat

    _, ins, _, _ = two_stages
    model, processor = load_model(ins / "final")
    data = SyntheticEmotionData(
        {m: 16 for m in ("face", "video", "audio")},
        labels=["neutral", "angry", "happy", "sad", "worried", "surprise"],
        noise=0.3,
    )
    samples, _ = data.split(4, split_seed=2, with_answer=False)
    answers = chat(model, processor, samples, max_new_tokens=8)
    assert len(answers) == 4 and all(isinstance(a, str) and a for a in answers)


def test_kill_and_resume_reproduces_an_uninterrupted_run(tmp_path, run_tiny):
    """SIGKILL right after the step-5 checkpoint (mid-epoch), resume, and compare with an uninterrupted run."""
    common = [
        "train.max_steps=12",
        "train.save_every=5",
        "train.eval_every=6",
        "train.keep_last=3",
        "data.synthetic.num_train=96",
    ]
    ref, ref_out = run_tiny(common, out=tmp_path / "ref")
    out = tmp_path / "killed"
    cmd = [python_bin(), "-m", "emollm.cli", "train", str(TINY), *QUICK, f"train.output_dir={out}", *common, "-q"]
    proc = subprocess.run(
        cmd, cwd=REPO, env=subprocess_env(**{KILL_ENV: "5"}), capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == -9, proc.stderr[-2000:]  # killed by SIGKILL, no end-of-training code ran
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000005"]
    assert not (out / "final").exists()
    resumed, _ = run_tiny(common, out=out)  # train.resume=auto picks up step 5
    assert read_log(out / "train_log.jsonl", "setup")[-1]["resumed_from"].endswith("step-00000005")

    def records(path):
        return [
            (r["kind"], r["step"], r.get("loss"), r.get("val_loss"), r.get("lr"))
            for r in read_log(path, None)
            if r["kind"] in ("train", "eval")
        ]

    assert records(out / "train_log.jsonl") == records(ref_out / "train_log.jsonl")
    assert resumed["replica_fingerprints"] == ref["replica_fingerprints"]
    for name in ("adapter_model.safetensors", "projectors.safetensors"):
        a, b = load_file(str(ref_out / "final" / name)), load_file(str(out / "final" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert resumed["best"] == ref["best"]


def test_merr_format_data_end_to_end(tmp_path, run_tiny):
    """Generated MERR JSON + .npy features (some audio missing), class-balanced loss, length grouping."""
    data = write_merr_dataset(tmp_path / "merr", n=40, missing_audio=4)
    summary, out = run_tiny(
        [
            *merr_overrides(data, tmp_path / "merr"),
            "train.max_steps=6",
            "train.save_every=0",
            "train.eval_every=0",
            "train.batch_size=4",
            "data.balance=loss",
            "data.tasks={emotion: 1.0, reason: 1.0}",
        ]
    )
    setup = read_log(out / "train_log.jsonl", "setup")[0]
    assert setup["skipped_samples"]["missing_feature_files"]["audio"] == 4
    assert setup["train_samples"] + setup["val_samples"] == 40 and setup["val_samples"] > 0
    assert summary["steps"] == 6 and summary["last_loss"] == summary["last_loss"]  # finite
    # drop_sample removes the clips without audio instead of training them without it
    summary, out = run_tiny(
        [
            *merr_overrides(data, tmp_path / "merr"),
            "train.max_steps=2",
            "train.save_every=0",
            "train.eval_every=0",
            "train.batch_size=4",
            "data.missing_features=drop_sample",
        ],
        out=tmp_path / "drop",
    )
    assert read_log(out / "train_log.jsonl", "setup")[0]["skipped_samples"]["train"]["missing features"] > 0


def test_streaming_run_resumes_by_position(tmp_path, run_tiny):
    data = write_merr_dataset(tmp_path / "merr", n=32)
    common = [
        *[o for o in merr_overrides(data, tmp_path / "merr", "jsonl", "jsonl") if "val_fraction" not in o],
        "data.streaming=true",
        "data.group_by_length=false",
        "data.shuffle_buffer=8",
        "train.batch_size=4",
        "train.max_steps=10",
        "train.save_every=4",
        "train.eval_every=0",
        "data.tasks={emotion: 1.0}",
    ]
    ref, ref_out = run_tiny(common, out=tmp_path / "ref")  # 10 steps x 4 = 40 > 32 samples: crosses an epoch
    # Resume from the step-8 checkpoint of the reference run in a fresh folder.
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(ref_out / "checkpoints" / "step-00000008", out / "checkpoints" / "step-00000008")
    resumed, _ = run_tiny(common, out=out)
    assert resumed["replica_fingerprints"] == ref["replica_fingerprints"]
    tail = [r["loss"] for r in read_log(out / "train_log.jsonl")]
    assert tail == [r["loss"] for r in read_log(ref_out / "train_log.jsonl")][8:]


def test_gradient_checkpointing_and_accumulation(tmp_path, run_tiny):
    """Checkpointing recomputes activations (same RNG for dropout): the weights match a run without it exactly."""
    common = [
        "train.max_steps=3",
        "train.save_every=0",
        "train.eval_every=0",
        "data.synthetic.num_val=0",
        "train.batch_size=4",
        "train.grad_accum=2",
    ]
    plain, out = run_tiny(common, out=tmp_path / "plain")
    ckpt, _ = run_tiny([*common, "train.gradient_checkpointing=true"], out=tmp_path / "ckpt")
    assert plain["replica_fingerprints"] == ckpt["replica_fingerprints"]
    assert read_log(out / "train_log.jsonl", "setup")[0]["steps_per_epoch"] == 128 // 8


def test_qlora_on_a_saved_tiny_model(tmp_path, run_tiny):
    """The QLoRA path (4-bit nf4 base through bitsandbytes, which runs on CPU) on a tiny LLM saved as an HF folder."""
    from emollm_train.build import build_run_model

    cfg = load_config(TINY)
    model, processor = build_run_model(cfg)
    folder = tmp_path / "tiny-llm"
    model.language_model.save_pretrained(folder)
    processor.tokenizer.save_pretrained(folder)
    out = tmp_path / "qlora"
    recipe = SFTRecipe(
        load_config(
            TINY,
            [
                *QUICK,
                f"train.output_dir={out}",
                "model.tiny=null",
                f"model.llm_path={folder}",
                "model.quantization=4bit",
                "train.max_steps=3",
                "train.save_every=0",
                "train.eval_every=0",
                "data.synthetic.num_val=0",
                "train.batch_size=4",
            ],
        )
    )
    recipe.setup()
    base = recipe.raw_model.language_model.get_base_model()
    assert base.is_loaded_in_4bit and type(base.model.layers[0].mlp.up_proj.base_layer).__name__ == "Linear4bit"
    summary = recipe.train()
    recipe.cleanup()
    assert summary["steps"] == 3 and summary["last_loss"] == summary["last_loss"]
    meta = json.loads((out / "final" / "checkpoint.json").read_text())
    assert meta["lora"]["r"] == 8 and not (out / "final" / "llm").exists()  # base re-loaded from llm_path


def test_aux_text_data_is_mixed_in(tmp_path, run_tiny):
    data = write_merr_dataset(tmp_path / "merr", n=24)
    aux = tmp_path / "goemotions.jsonl"
    aux.write_text(
        "".join(json.dumps({"text": f"what a day {i}", "label": "joy" if i % 2 else "anger"}) + "\n" for i in range(40))
    )
    summary, out = run_tiny(
        [
            *merr_overrides(data, tmp_path / "merr"),
            "train.max_steps=3",
            "train.save_every=0",
            "train.eval_every=0",
            "train.batch_size=4",
            f"data.aux=[{{path: {aux}, ratio: 0.5, label_map: {{joy: happy, anger: angry}}}}]",
        ]
    )
    setup = read_log(out / "train_log.jsonl", "setup")[0]
    n = setup["train_samples"]
    assert setup["steps_per_epoch"] == (n + round(0.5 * n)) // 4


def test_resume_refuses_a_mismatching_trainable_spec(tmp_path, run_tiny):
    _, out = run_tiny(["train.max_steps=2", "train.save_every=1", "train.eval_every=0"])
    with pytest.raises(ValueError, match="has LoRA adapter, but this run's trainable.llm is 'frozen'"):
        run_tiny(["train.max_steps=4", "train.trainable.llm=frozen", "train.eval_every=0"], out=out)
    with pytest.raises(FileExistsError, match="holds checkpoints of an earlier run"):
        run_tiny(["train.max_steps=4", "train.resume=never"], out=out)


def test_init_from_another_backbone_is_refused(tmp_path, run_tiny, two_stages):
    pre = two_stages[0]
    with pytest.raises(ValueError, match="trained for backbone 'smollm2', not 'qwen2'"):
        run_tiny(["model.backbone=qwen2", f"train.init_from={pre}/final", "train.max_steps=1"])


def test_cli_train_entry(tmp_path, capsys):
    from emollm.cli import main

    assert main(["train", str(TINY), "--print-config", "train.seed=3"]) == 0
    assert "seed: 3" in capsys.readouterr().out
    assert main(["train", str(TINY), "train.bogus=1"]) == 2
    assert "train.bogus: unknown key" in capsys.readouterr().err
