"""Every registry entry runs the recipe: a tiny random model of its real transformers class (2 layers, hidden 64,
~1k vocabulary) gets its LoRA targets (each matched, every decoder layer adapted in its token mixer and its MLP),
modality tokens spliced in, one stage-2 step, a checkpoint saved, reloaded and generating the same tokens.

Parametrised over ``list_backbones()``: a new entry is tested without touching this file, and fails CI until its
class, config fix-ups, LoRA targets, chat format and placeholder policy all work together.
"""

from __future__ import annotations

import re

import pytest
import torch
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from emollm.backbones import get_backbone, list_backbones
from emollm.checkpoints import load_model, save_checkpoint
from emollm.model.generation import chat
from emollm.model.lora import LoraSettings, apply_lora, set_trainable
from emollm.settings import STAGES

from .conftest import make_tiny
from .test_modeling import sample

_LAYER = re.compile(r"\.layers\.(\d+)\.(.+)\.lora_A$")
_MIXERS = ("self_attn", "linear_attn")  # attention, or Qwen3.5's Gated-DeltaNet linear attention


def _lora_modules(lm) -> list[str]:
    """Names of the modules that received a LoRA adapter (peft's lora_A ModuleDict sits under each)."""
    return [n.removesuffix(".lora_A") for n, _ in lm.named_modules() if n.endswith(".lora_A")]


def _check_targets(model, spec) -> None:
    """Every target matched at least once, and every decoder layer adapted in its token mixer and in its MLP."""
    lm = model.language_model
    adapted = _lora_modules(lm)
    leaves = {n.rsplit(".", 1)[-1] for n in adapted}
    missing = [t for t in spec.lora_targets if t not in leaves]
    assert not missing, f"{spec.name}: LoRA targets {missing} matched no module of {type(lm.base_model.model)}"
    per_layer: dict[int, set[str]] = {}
    for name, _ in lm.named_modules():
        found = _LAYER.search(name)
        if found:
            per_layer.setdefault(int(found.group(1)), set()).add(found.group(2).split(".")[0])
    n_layers = lm.base_model.model.config.num_hidden_layers
    assert sorted(per_layer) == list(range(n_layers)), f"{spec.name}: layers without adapters"
    for layer, parts in per_layer.items():
        assert parts & set(_MIXERS) and "mlp" in parts, f"{spec.name}: layer {layer} adapts only {sorted(parts)}"


@pytest.mark.parametrize("backbone", list_backbones())
def test_every_entry_runs_the_recipe(backbone, tmp_path):
    torch.manual_seed(0)
    spec = get_backbone(backbone)
    model, proc = make_tiny(backbone)
    lm = model.language_model
    assert type(lm).__name__ == MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[spec.family]
    assert lm.config.num_hidden_layers == 2 and lm.config.hidden_size == 64
    # Placeholder policy: "reserved" reuses existing rows (no new token); "add_special" adds <|emo_*|> tokens.
    vocab = proc.tokenizer.get_vocab()
    for modality, token in proc.placeholders.items():
        assert token == spec.placeholder_tokens()[modality] and token in vocab
    assert lm.get_input_embeddings().weight.shape[0] >= len(proc.tokenizer)

    lora = LoraSettings(r=4, alpha=8, dropout=0.0)
    apply_lora(model, lora, spec.lora_targets)
    _check_targets(model, spec)
    counts = set_trainable(model, STAGES["instruct"])
    assert counts["llm"] > 0 and counts["projectors"] > 0 and counts["encoders"] == 0

    batch = proc([sample(), sample(face=False, frames=5)])
    for m, token_id in proc.placeholder_ids.items():  # one run of placeholder tokens per present input
        expected = sum(
            model.num_tokens(m, s.features[m].shape[0])
            for s in (sample(), sample(face=False, frames=5))
            if s.features.get(m) is not None
        )
        assert int((batch.input_ids == token_id).sum()) == expected, m
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = model(**batch.model_inputs())
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for m in ("audio", "face", "video"):  # the spliced features reach the loss
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projectors[m].parameters()), m
    opt.step()
    changed = {n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(before[n], p)}
    assert any("lora_B" in n for n in changed) and any(n.startswith("projectors.") for n in changed)

    model.eval()
    question = [sample(name="q"), sample(audio=False, name="q2")]
    answers = chat(model, proc, question, max_new_tokens=4)
    ckpt = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=STAGES["instruct"])
    loaded, lproc = load_model(ckpt)
    assert type(loaded.language_model.get_base_model()) is type(model.language_model.get_base_model())
    assert lproc.chat_format.render(question[0].messages).text == proc.chat_format.render(question[0].messages).text
    assert chat(loaded, lproc, question, max_new_tokens=4) == answers
    assert len(answers) == 2


def test_gemma4_kv_shared_layers_lack_k_and_v_but_keep_their_adapters():
    """Gemma-4's last ``num_kv_shared_layers`` layers reuse KV and have no k_proj/v_proj: the registry's targets
    still adapt their q/o projections and MLP, and k/v are adapted where they exist."""
    from transformers import AutoModelForCausalLM

    from emollm.backbones import LORA_ALL_LINEAR

    spec = get_backbone("gemma4")
    cfg = spec.text_config(
        n_layers=3,
        hidden=64,
        vocab_size=300,
        layer_types=["sliding_attention", "full_attention", "full_attention"],
        num_kv_shared_layers=1,
    )
    lm = AutoModelForCausalLM.from_config(cfg)
    names = {n for n, _ in lm.named_modules()}
    assert "model.layers.2.self_attn.k_proj" not in names and "model.layers.1.self_attn.k_proj" in names
    assert spec.lora_targets == LORA_ALL_LINEAR

    class Holder(torch.nn.Module):  # apply_lora wraps `.language_model`
        def __init__(self, lm):
            super().__init__()
            self.language_model = lm

    holder = Holder(lm)
    apply_lora(holder, LoraSettings(r=2, alpha=4, dropout=0.0), spec.lora_targets)
    adapted = _lora_modules(holder.language_model)
    shared = {n.split("layers.2.", 1)[1] for n in adapted if "layers.2." in n}
    assert shared == {"self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    assert any(n.endswith("layers.1.self_attn.v_proj") for n in adapted)


def test_gemma4_spliced_prompt_generates_as_step_by_step_forward():
    """Gemma-4 looks up a per-layer embedding of every token id: with placeholders spliced in, ``generate`` prefills
    all but the last prompt token itself. Its greedy tokens must equal a full forward pass per step, and a text-only
    forward must equal the bare model's on the same ids."""
    torch.manual_seed(0)
    model, proc = make_tiny("gemma4")
    model.eval()
    lm = model.language_model
    text_only = proc([sample(audio=False, face=False, video=False)])
    with torch.no_grad():
        ours = model(text_only.input_ids, text_only.attention_mask).logits
        bare = lm(input_ids=text_only.input_ids, attention_mask=text_only.attention_mask).logits
    torch.testing.assert_close(ours, bare)

    batch = proc([sample(name="q")], add_generation_prompt=True)
    new = model.generate(
        batch.input_ids, batch.attention_mask, batch.modality_inputs, max_new_tokens=5, do_sample=False
    )
    ids, blocked = batch.input_ids, sorted(proc.placeholder_ids.values())
    with torch.no_grad():
        for _ in range(new.shape[1]):
            logits = model(ids, torch.ones_like(ids), modality_inputs=batch.modality_inputs).logits[:, -1]
            logits[:, blocked] = float("-inf")
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(new, ids[:, batch.input_ids.shape[1] :])
