"""Emotion-LLaMA / MiniGPT-v2 import at tiny dimensions: the released key names with H=64, r=4, feature width 16.

The heart is the parity test: our imported model's logits equal a reference forward written here from the
published formulas (text embeddings, features through the state-dict matrices concatenated in the released order
face, video, audio, and a LLaMA whose q/v weights are W + (alpha / r) B A), in both token layouts.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from emollm.checkpoints import load_model
from emollm.checkpoints.published import (
    build_import_model,
    emotion_llama_messages,
    import_checkpoint,
    import_state_dict,
)
from emollm.checkpoints.published.cli import main
from emollm.checkpoints.published.released import read_released_state_dict
from emollm.model.processing import Sample
from tests.emollm.conftest import tiny_tokenizer

H, R, ALPHA, FEAT, LAYERS = 64, 4, 16, 16, 2


def released_state(seed: int = 0, *, source: str = "emotion-llama", default: bool = False) -> dict[str, torch.Tensor]:
    """A synthetic state dict with exactly the released key names (dims shrunk)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    sd = {}
    tag = ".default" if default else ""
    for i in range(LAYERS):
        for proj in ("q_proj", "v_proj"):
            pre = f"llama_model.base_model.model.model.layers.{i}.self_attn.{proj}"
            sd[f"{pre}.lora_A{tag}.weight"] = rnd(R, H)
            sd[f"{pre}.lora_B{tag}.weight"] = rnd(H, R)
        sd[f"llama_model.base_model.model.model.layers.{i}.self_attn.rotary_emb.inv_freq"] = torch.rand(8)
    sd["llama_proj.weight"], sd["llama_proj.bias"] = rnd(H, 1408 * 4), rnd(H)
    if source == "emotion-llama":
        for k in (1, 2, 3):
            sd[f"feats_llama_proj{k}.weight"], sd[f"feats_llama_proj{k}.bias"] = rnd(H, FEAT), rnd(H)
        sd["cls_tk_llama_proj.weight"], sd["cls_tk_llama_proj.bias"] = rnd(H, 1408), rnd(H)
        sd["attention.feats_prep.weight"], sd["attention.fc_out.weight"] = rnd(8, 8), rnd(6, 8)
    return sd


def tiny_build():
    tok = tiny_tokenizer("llama2")
    from emollm.backbones import get_backbone

    text_config = get_backbone("llama2").text_config(
        n_layers=LAYERS, hidden=H, vocab_size=len(tok), n_heads=4, n_kv_heads=4
    )  # no GQA, as LLaMA-2-7B
    torch.manual_seed(0)
    return build_import_model(text_config=text_config, tokenizer=tok, rank=R, feature_dim=FEAT)


def lora_merged(base_lm, sd):
    """A copy of the base LLaMA whose q/v weights are W + (alpha / r) B A, with the released LoRA tensors."""
    lm = copy.deepcopy(base_lm)
    for i, layer in enumerate(lm.model.layers):
        for proj in ("q_proj", "v_proj"):
            pre = f"llama_model.base_model.model.model.layers.{i}.self_attn.{proj}"
            lin = getattr(layer.self_attn, proj)
            lin.weight.data += (ALPHA / R) * sd[f"{pre}.lora_B.weight"] @ sd[f"{pre}.lora_A.weight"]
    return lm


def reference_logits(base_lm, sd, input_ids, placeholder_ids, feats) -> torch.Tensor:
    """The published forward, by hand: splice projected features (face, video, audio) at the placeholder run."""
    lm = lora_merged(base_lm, sd)
    ids = input_ids[0]
    pos = [j for j, t in enumerate(ids.tolist()) if t in placeholder_ids]
    assert pos == list(range(pos[0], pos[0] + 3))  # one contiguous run of 3 tokens
    projected = [
        feats[m] @ sd[f"feats_llama_proj{k}.weight"].T + sd[f"feats_llama_proj{k}.bias"]
        for k, m in ((1, "face"), (2, "video"), (3, "audio"))
    ]
    emb = lm.get_input_embeddings()
    embeds = torch.cat([emb(ids[: pos[0]]), torch.cat(projected), emb(ids[pos[-1] + 1 :])])[None]
    return lm(inputs_embeds=embeds).logits


@pytest.mark.parametrize("layout", ["published", "trained"])
def test_parity_with_reference_forward(layout):
    model, processor = tiny_build()
    base = copy.deepcopy(model.language_model.get_base_model())  # before the import: LoRA B = 0 -> plain weights
    sd = released_state()
    report = import_state_dict(model, sd)
    assert len(report.mapped) == LAYERS * 4 + 6
    assert sorted(report.kept) == [
        "cls_tk_llama_proj.bias",
        "cls_tk_llama_proj.weight",
        "llama_proj.bias",
        "llama_proj.weight",
    ]
    assert all("attention" in k or "inv_freq" in k for k in report.skipped) and len(report.skipped) == LAYERS + 2
    g = torch.Generator().manual_seed(1)
    feats = {m: torch.randn(1, FEAT, generator=g) for m in ("face", "video", "audio")}
    sample = Sample(emotion_llama_messages("I passed", layout), features=feats)
    text = processor.render(sample)[0]["content"]
    p = {m: processor.placeholders[m] for m in feats}
    run = p["face"] + p["video"] + p["audio"]
    tail = " The person in video says: I passed. [emotion] Please determine which emotion label"
    if layout == "published":
        assert text.startswith(f"<video>{run}</video> <feature><FeatureHere></feature>{tail}")
    else:
        assert text.startswith(f"<video></video> <feature>{run}</feature>{tail}")
    batch = processor([sample], add_generation_prompt=True)
    model.eval()
    with torch.no_grad():
        ours = model(**batch.model_inputs()).logits
        ref = reference_logits(base.eval(), sd, batch.input_ids, set(processor.placeholder_ids.values()), feats)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert (ours - ref).abs().max() < 1e-4 and ours.abs().max() > 1e-3


def test_lora_names_with_default_and_rank_mismatch():
    model, _ = tiny_build()
    report = import_state_dict(model, released_state(default=True))
    assert "llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight" in report.mapped
    model, _ = tiny_build()
    sd = released_state()
    key = "llama_model.base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"
    sd[key] = torch.zeros(R + 1, H)
    with pytest.raises(ValueError, match=r"layers\.1\.self_attn\.v_proj\.lora_A\.weight: LoRA rank 5"):
        import_state_dict(model, sd)
    sd = released_state()
    sd["feats_llama_proj2.weight"] = torch.zeros(H, FEAT + 1)
    with pytest.raises(ValueError, match=r"feats_llama_proj2\.weight: shape \(64, 17\)"):
        import_state_dict(model, sd)


def test_import_save_load_roundtrip(tmp_path):
    model, processor = tiny_build()
    sd = released_state()
    path = tmp_path / "released.pth"
    torch.save({"model": sd, "epoch": 3}, path)
    lm_dir = tmp_path / "llm"  # a base LLM folder the checkpoint records as its llm_source
    copy.deepcopy(model.language_model).merge_and_unload().save_pretrained(lm_dir)  # fresh LoRA: B = 0
    processor.tokenizer.save_pretrained(lm_dir)
    out = tmp_path / "imported"
    assert main(["emotion-llama", str(path), "--llm-path", str(lm_dir), "--out", str(out), "--layout", "trained"]) == 0
    run = json.loads((out / "run_config.json").read_text())["published"]
    assert run["layout"] == "trained" and run["lora_r"] == R and run["lora_scale"] == ALPHA / R
    loaded, proc = load_model(out)
    face = dict(loaded.named_parameters())["projectors.face.proj.1.weight"]
    assert torch.equal(face, sd["feats_llama_proj1.weight"])
    lora = dict(loaded.language_model.named_parameters())
    key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight"
    assert torch.equal(lora[key], sd["llama_model.base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"])
    assert loaded.language_model.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"] == ALPHA / R


def test_minigpt_v2_is_lora_only(tmp_path):
    model, _ = tiny_build()
    report = import_state_dict(model, released_state(source="minigpt-v2"), source="minigpt-v2")
    assert report.kept == ["llama_proj.weight", "llama_proj.bias"]
    assert len(report.missing) == 3 and "MiniGPT-v2" in report.notes[0]


def test_refuses_pickled_code_with_the_fix(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": released_state(), "config": argparse_namespace()}, path)
    with pytest.raises(ValueError, match="weights_only=True.*re-save only its state dict"):
        read_released_state_dict(path)


def test_empty_and_damaged_files_are_named_with_the_fix(tmp_path):
    empty, damaged = tmp_path / "empty.pth", tmp_path / "damaged.pth"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pth is empty \(0 bytes\).*fetch the checkpoint again"):
        read_released_state_dict(empty)
    torch.save({"model": released_state()}, damaged)
    damaged.write_bytes(damaged.read_bytes()[:200])  # a copy cut short
    with pytest.raises(ValueError, match=r"damaged\.pth is not a readable torch checkpoint \(.+\); is it a damaged"):
        read_released_state_dict(damaged)


def argparse_namespace():
    import argparse

    return argparse.Namespace(lr=1e-5)


def test_without_eva_path_the_frame_projectors_are_kept_loudly(tmp_path):
    """No --eva-path: 3 feature tokens, the EVA projectors kept unused, and a note naming the way to the frame branch
    (the frame branch itself: tests/published/test_frame_branch.py)."""
    tok = tiny_tokenizer("llama2")
    from emollm.backbones import get_backbone

    cfg = get_backbone("llama2").text_config(n_layers=LAYERS, hidden=H, vocab_size=len(tok), n_heads=4, n_kv_heads=4)
    report = import_checkpoint(released_state(), tmp_path / "x", text_config=cfg, tokenizer=tok)
    assert report.settings["frame_branch"] is False and report.settings["modality_tokens"] == 3
    assert "cls_tk_llama_proj.weight" in report.kept and "import with --eva-path" in report.notes[0]
    assert sorted(json.loads((tmp_path / "x" / "emollm_config.json").read_text())["modalities"]) == [
        "audio",
        "face",
        "video",
    ]


LABELS = "happy,sad,neutral,angry,worried,surprise,fear,contempt,doubt"


def analyze_with_features(tmp_path, clip, checkpoint) -> dict:
    """``emollm analyze CLIP --checkpoint DIR --face F.npy --video V.npy --audio A.npy --json``: the result."""
    import contextlib
    import io

    import numpy as np

    from emollm.apps.analyze import main as analyze_main

    files = []
    for m in ("face", "video", "audio"):
        np.save(tmp_path / f"{m}.npy", np.random.default_rng(0).normal(size=(FEAT,)).astype(np.float32))
        files += [f"--{m}", str(tmp_path / f"{m}.npy")]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = analyze_main(
            [str(clip), "--checkpoint", str(checkpoint), "--labels", LABELS, "--json", "--max-new-tokens", "3", *files]
        )
    assert code == 0
    result = json.loads(buf.getvalue())
    assert result["mode"] == "checkpoint" and result["label"] in LABELS.split(",")
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-4
    return result


def test_imported_checkpoint_analyzes_a_clip(tmp_path):
    """The import works with ``emollm analyze --checkpoint`` (features given as the released .npy files); with the
    frame branch: tests/published/test_frame_branch.py."""
    from emollm.media import fixtures

    model, processor = tiny_build()
    path = tmp_path / "released.pth"
    torch.save({"model": released_state()}, path)
    lm_dir = tmp_path / "llm"
    copy.deepcopy(model.language_model).merge_and_unload().save_pretrained(lm_dir)
    processor.tokenizer.save_pretrained(lm_dir)
    out = tmp_path / "imported"
    assert main(["emotion-llama", str(path), "--llm-path", str(lm_dir), "--out", str(out)]) == 0
    clip = fixtures.make_face_clip(tmp_path / "clip.mp4", "astronaut", seconds=1.0, audio=None).path
    result = analyze_with_features(tmp_path, clip, out)
    assert sorted(result["modalities"]) == ["audio", "face", "video"]
