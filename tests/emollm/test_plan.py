"""``emollm plan``: exact parameter counts, known memory facts, and the activation formula against saved tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from emollm.backbones import get_backbone
from emollm.planning.memory import (
    GIB,
    ActivationSettings,
    activation_bytes,
    count_parameters,
    main,
    meta_language_model,
    parse_memory,
    plan_run,
    quantized_weight_bytes,
)
from emollm.runconfig import load_config

ROOT = Path(__file__).resolve().parents[2]
LLAMA2 = str(ROOT / "configs/instruct/llama2.yaml")
LLAMA3 = str(ROOT / "configs/instruct/llama3.yaml")
MISTRAL = str(ROOT / "configs/instruct/mistral.yaml")
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize(
    ("backbone", "known"),
    [("llama2", 6.74e9), ("mistral", 7.24e9), ("llama3", 8.03e9)],
)
def test_parameter_counts_match_the_published_models(backbone, known):
    arch = count_parameters(meta_language_model(get_backbone(backbone)))
    assert abs(arch.total - known) / known < 0.01
    assert arch.embedding == arch.lm_head == arch.vocab * arch.hidden  # untied embeddings and lm_head


def test_exact_counts_of_llama2_7b():
    arch = count_parameters(meta_language_model(get_backbone("llama2")), ALL_LINEAR, 16)
    assert arch.total == 6_738_415_616
    assert arch.lora == 39_976_960  # peft's "trainable params" for r=16 on all linear layers of LLaMA-2-7B


@pytest.mark.parametrize("backbone", ["llama2", "mistral"])
def test_a_7b_model_in_4bit_weighs_3_5_to_4_gb(backbone):
    arch = count_parameters(meta_language_model(get_backbone(backbone)))
    assert 3.5 <= quantized_weight_bytes(arch, "4bit", 2) / GIB <= 4.0
    assert 6.5 <= quantized_weight_bytes(arch, "8bit", 2) / GIB <= 7.5
    assert quantized_weight_bytes(arch, None, 2) / GIB == pytest.approx(arch.total * 2 / GIB)


def test_lora_7b_bf16_does_not_fit_16gb_without_checkpointing():
    cfg = load_config(LLAMA2, ["model.dtype=bfloat16", "train.batch_size=1", "train.gradient_checkpointing=false"])
    plan = plan_run(cfg, gpu_memory_gib=16, cross_checks=False)
    assert not plan.fits
    assert plan.total[0] > 16 * GIB > plan.components["weights (LLM, 16-bit, frozen)"][0]
    assert plan.total[1] < plan.total[0]  # checkpointing is the cheaper column
    assert plan.max_batch == 0


@pytest.mark.parametrize("config", [LLAMA2, MISTRAL])
def test_qlora_7b_fits_24gb_with_checkpointing(config):
    cfg = load_config(config, ["model.quantization=4bit", "train.batch_size=1", "train.gradient_checkpointing=true"])
    plan = plan_run(cfg, gpu_memory_gib=24, cross_checks=False)
    assert plan.fits
    assert plan.max_batch >= 1 and plan.max_seq_len >= 1024
    assert "fp32 upcast of embeddings/lm_head/norms" in plan.components


def test_zero3_partitions_weights_and_states_across_gpus():
    cfg = load_config(LLAMA3)
    one = plan_run(cfg, gpus=1, zero=3, cross_checks=False)
    two = plan_run(cfg, gpus=2, zero=3, cross_checks=False)
    key = "weights (LLM, 16-bit, frozen)"
    assert two.components[key][0] == pytest.approx(one.components[key][0] / 2)
    assert two.total[1] < one.total[1]
    z2 = plan_run(cfg, gpus=2, zero=2, cross_checks=False)
    assert z2.components[key][0] == pytest.approx(one.components[key][0])  # ZeRO-2 replicates the weights


def test_cross_checks_agree_with_accelerate_and_deepspeed():
    pytest.importorskip("deepspeed")
    plan = plan_run(load_config(LLAMA3), gpus=2, zero=2)
    acc = plan.cross_checks["accelerate"]
    assert acc["model_bytes_fp32"] == pytest.approx(4 * plan.params["llm"], abs=2**20)  # + rotary buffers
    assert acc["largest_layer_bytes"] >= 4 * plan.params["embedding"]
    ds = plan.cross_checks["deepspeed"]
    assert isinstance(ds, dict), ds
    ours = sum(v[0] for k, v in plan.components.items() if not k.startswith(("activations", "loss", "CUDA")))
    assert ds["model_states_bytes"] == pytest.approx(ours, rel=0.05)


def test_lora_count_matches_peft():
    from peft import LoraConfig, get_peft_model

    spec = get_backbone("mistral")
    lm = __import__("transformers").AutoModelForCausalLM.from_config(spec.text_config(n_layers=2, hidden=64))
    arch = count_parameters(lm, ["q_proj", "v_proj", "down_proj"], 8)
    peft_model = get_peft_model(lm, LoraConfig(r=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert arch.lora == trainable
    assert arch.lora_inputs == (64, 64, 128)


def _saved_bytes(mode: str, batch: int, seq: int, dropout: float = 0.05) -> tuple[int, object, int]:
    """Bytes autograd keeps for backward (unique storages, parameters excluded) in one bf16 forward."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    spec = get_backbone("llama3")
    cfg = spec.text_config(n_layers=2, hidden=128, intermediate=344, n_heads=8, n_kv_heads=2, vocab_size=512)
    lm = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    arch = count_parameters(lm, ALL_LINEAR if mode == "lora" else (), 8)
    model = lm
    if mode == "lora":
        model = get_peft_model(lm, LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=ALL_LINEAR))
    elif mode == "frozen":
        lm.requires_grad_(False)
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() and s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    x = lm.get_input_embeddings()(torch.randint(0, 512, (batch, seq))).detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", torch.bfloat16):
        model(inputs_embeds=x, use_cache=False, logits_to_keep=1)
    return sum(seen.values()), arch, (2 * arch.lora if mode == "lora" else 0)


@pytest.mark.parametrize("mode", ["lora", "full", "frozen"])
def test_activation_formula_matches_saved_tensors(mode):
    saved, arch, casts = _saved_bytes(mode, batch=2, seq=96)
    s = ActivationSettings(
        batch=2,
        seq_len=96,
        logit_tokens=1,
        llm=mode,
        lora_dropout=0.05,
        mask_bytes=4,  # CPU dropout keeps a float mask (CUDA: bool)
        native_gqa=True,  # no padding mask -> SDPA's own GQA
        attention_mask=False,
        autocast_weights=casts,
    )
    predicted = activation_bytes(arch, s)["saved"]
    assert predicted == pytest.approx(saved, rel=0.03), (predicted, saved)


def test_activations_scale_with_batch_and_checkpointing_saves_memory():
    arch = count_parameters(meta_language_model(get_backbone("llama2")), ALL_LINEAR, 16)
    one = activation_bytes(arch, ActivationSettings(batch=1, seq_len=1024, logit_tokens=1024))
    two = activation_bytes(arch, ActivationSettings(batch=2, seq_len=1024, logit_tokens=1024))
    assert two["saved"] == pytest.approx(2 * one["saved"], rel=0.01)
    assert one["saved_ckpt"] < one["saved"] / 10
    assert one["loss"] == 12 * 1024 * 32000


def test_parse_memory():
    assert parse_memory("24GB") == parse_memory("24GiB") == parse_memory("24") == 24.0
    assert parse_memory("81920MB") == 80.0
    with pytest.raises(Exception, match="gpu-memory"):
        parse_memory("lots")


def test_cli_table_and_json(capsys):
    assert main([LLAMA3, "model.quantization=4bit", "--gpu-memory", "24GB"]) == 0
    out = capsys.readouterr().out
    assert "fits in 24 GiB" in out and "weights (LLM, nf4+double quant)" in out
    assert main([LLAMA2, "train.gradient_checkpointing=false", "--gpu-memory", "16GB", "--json"]) == 2
    data = json.loads(capsys.readouterr().out)
    assert data["fits"] is False and data["units"].startswith("GiB")
    assert set(data["total"]) == {"no_ckpt", "ckpt"}
    assert data["params"]["llm"] == 6_738_415_616


@pytest.mark.gpu
def test_plan_matches_max_memory_allocated_of_a_real_step():
    """One LoRA step of a small LLaMA on a GPU: measured peak vs. the plan's allocated part (no context)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    batch, seq = 2, 512
    spec = get_backbone("llama3")
    cfg = spec.text_config(n_layers=8, hidden=1024, intermediate=2816, n_heads=16, n_kv_heads=4, vocab_size=32000)
    lm = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa").cuda()
    arch = count_parameters(lm, ALL_LINEAR, 16)
    model = get_peft_model(lm, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=ALL_LINEAR))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, 32000, (batch, seq), device="cuda")

    def step():
        x = lm.get_input_embeddings()(ids).detach().requires_grad_(True)
        with torch.autocast("cuda", torch.bfloat16):
            logits = model(inputs_embeds=x, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # creates AdamW states
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    measured = torch.cuda.max_memory_allocated()
    s = ActivationSettings(
        batch=batch,
        seq_len=seq,
        logit_tokens=seq,
        native_gqa=True,
        attention_mask=False,
        autocast_weights=2 * arch.lora,
    )
    act = activation_bytes(arch, s)
    static = 2 * arch.total + 16 * arch.lora  # bf16 base, fp32 LoRA weights + grads + AdamW m, v
    planned = static + act["peak"]
    assert planned == pytest.approx(measured, rel=0.2), (planned / GIB, measured / GIB)
