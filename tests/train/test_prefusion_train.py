"""The fused ``<multi>`` slot trained by the ordinary two-stage recipe from YAML, on a registry backbone and on the
``affectgpt`` backbone (AffectGPT's ###Human format, placeholders and pad)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from emollm.runconfig import load_config, validate
from emollm_train.monitor import read_log
from emollm_train.sft import SFTRecipe, run

from .conftest import QUICK, TINY, TINY_INSTRUCT

MULTI = [
    "model.modalities.face.projector={kind: affectgpt_attn_pool}",
    "model.modalities.audio.projector={kind: affectgpt_attn_pool}",
    "model.modalities.multi={feature_dim: 24, fuse: {sources: [face, audio]}, projector: {kind: linear}}",
    "train.save_every=0",
    "train.eval_every=0",
]


def test_two_stages_train_and_carry_the_fusion(tmp_path):
    pre, ins = tmp_path / "pre", tmp_path / "ins"
    s1 = run(load_config(TINY, [*QUICK, *MULTI, f"train.output_dir={pre}", "train.max_steps=8"]))
    assert s1["steps"] == 8 and s1["last_loss"] == s1["last_loss"]
    saved = load_file(str(pre / "final" / "projectors.safetensors"))
    assert {"fusers.multi.fc_att.weight", "fusers.multi.embed.face.weight", "projectors.multi.proj.1.weight"} <= set(
        saved
    )
    stage2 = [*QUICK, *MULTI, f"train.output_dir={ins}", f"train.init_from={pre}/final", "train.max_steps=4"]
    probe = [*QUICK, *MULTI, f"train.output_dir={ins}-probe", f"train.init_from={pre}/final"]
    recipe = SFTRecipe(load_config(TINY_INSTRUCT, probe))
    recipe.setup()
    model = recipe.raw_model
    assert torch.equal(model.fusers["multi"].fc_att.weight, saved["fusers.multi.fc_att.weight"])  # stage 1's
    assert all(p.requires_grad for p in model.fusers.parameters())  # connectors train in both stages
    item = recipe.data.train_ds[0]
    assert any("<|emo_multi|>" in m["content"] for m in recipe.processor.render(item.sample))
    recipe.cleanup()
    s2 = run(load_config(TINY_INSTRUCT, stage2))
    assert s2["steps"] == 4
    setup = read_log(ins / "train_log.jsonl", "setup")[0]
    assert setup["projectors_missing"] == []


def test_affectgpt_backbone_trains_from_yaml(tmp_path):
    cfg = load_config(TINY, [*QUICK, *MULTI, "model.backbone=affectgpt", f"train.output_dir={tmp_path}",
                             "train.max_steps=2"])  # fmt: skip
    summary = run(cfg)
    assert summary["steps"] == 2
    recipe = SFTRecipe(load_config(TINY, [*QUICK, *MULTI, "model.backbone=affectgpt",
                                          f"train.output_dir={tmp_path}-probe", "train.max_steps=2"]))  # fmt: skip
    recipe.setup()
    tok = recipe.processor.tokenizer
    assert tok.pad_token == tok.eos_token == "<|im_end|>" and tok.bos_token == "<|im_start|>"
    ids = [tok.convert_tokens_to_ids(t) for t in ("<ImageHere>", "<AudioHere>", "<FrameHere>", "<FaceHere>")]
    assert ids == list(range(ids[0], ids[0] + 4))
    text = tok.decode(recipe.data.collator([recipe.data.train_ds[0]]).batch.input_ids[0])
    assert text.startswith("<|im_start|>###Human: ") and "<MultiHere>" in text and " ###Assistant: " in text
    assert text.endswith("###<|im_end|>")  # answer + '###' + eos, as the release's collater builds it
    recipe.cleanup()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.modalities.multi={feature_dim: 24}", "the 'multi' slot is computed from other modalities"),
        ("model.modalities.multi={fuse: {sources: [face, video]}, feature_dir: x}", "remove feature_dir"),
        ("model.modalities.face.fuse={sources: [face, audio]}", "only a fused slot"),
    ],
)
def test_validate_names_the_bad_key(override, message):
    report = validate(load_config(TINY, [override]))
    assert any(message in e for e in report.errors), report.errors
