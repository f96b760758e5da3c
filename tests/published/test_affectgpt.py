"""AffectGPT v2 import at tiny dimensions: the released key names with H=64, r=4, visual width 24, audio width 32.

The heart is the parity test: the imported model's logits equal a reference forward written here from the released
formulas (``encode_video_merge`` / ``encode_audio_merge`` attention pooling, ``encode_multi_attention``, the
``###Human:`` prompt tokenised as the release does, placeholder ids swapped to 0 before the embedding lookup and the
feature rows written over them, and a Qwen2 whose seven linears are W + (alpha / r) B A), for the face and the frame
model. The reference uses only transformers, torch and the state dict, never emollm's modules.
"""

from __future__ import annotations

import contextlib
import io
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from emollm.backbones import get_backbone
from emollm.checkpoints import load_model
from emollm.checkpoints.published.affectgpt import (
    AFFECTGPT_SAMPLING,
    affectgpt_messages,
    affectgpt_prompt,
    import_affectgpt,
)
from emollm.checkpoints.published.cli import main
from emollm.model.processing import Sample
from emollm.testing import build_tiny_tokenizer

H, R, LAYERS, DV, DA, W, ALPHA = 64, 4, 2, 24, 32, 32, 32
INTER, KV = 128, 32  # Qwen2 tiny: intermediate 2H, 4 heads of 16 with 2 KV heads
LINEARS = {
    "self_attn.q_proj": (H, H),
    "self_attn.k_proj": (H, KV),
    "self_attn.v_proj": (H, KV),
    "self_attn.o_proj": (H, H),
    "mlp.gate_proj": (H, INTER),
    "mlp.up_proj": (H, INTER),
    "mlp.down_proj": (INTER, H),
}
MODULES = {
    "image_llama_proj": (H, DV),
    "video_attention_mlp": (1, DV),
    "affectgpt_proj": (H, DV),
    "audio_attention_mlp": (1, DA),
    "audio_llama_proj": (H, DA),
    "multi_audio_embs": (W, DA),
    "multi_video_embs": (W, DV),
    "attention_mlp": (W, 2 * W),
    "fc_att": (2, W),
    "multi_llama_proj": (H, W),
}
PLACEHOLDERS = ("<ImageHere>", "<AudioHere>", "<FrameHere>", "<FaceHere>", "<MultiHere>")


def released_state(seed: int = 0, scale: float = 0.1) -> dict[str, torch.Tensor]:
    """A synthetic state dict with exactly the released key names (dims shrunk): 412 keys at full size."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g) * scale

    sd = {}
    for i in range(LAYERS):
        for name, (din, dout) in LINEARS.items():
            pre = f"llama_model.base_model.model.model.layers.{i}.{name}"
            sd[f"{pre}.lora_A.default.weight"] = rnd(R, din)
            sd[f"{pre}.lora_B.default.weight"] = rnd(dout, R)
    for key, shape in MODULES.items():
        sd[f"{key}.weight"], sd[f"{key}.bias"] = rnd(*shape), rnd(shape[0])
    return sd


def tiny_tokenizer_and_config():
    tok = build_tiny_tokenizer("affectgpt")
    # spare rows, as Qwen2.5's 152064-row matrix has: the five added placeholders need no resize
    cfg = get_backbone("affectgpt").text_config(
        n_layers=LAYERS, hidden=H, vocab_size=len(tok) + 8, n_heads=4, n_kv_heads=2
    )
    return tok, cfg


def do_import(tmp_path: Path, variant: str, sd=None) -> Path:
    tok, cfg = tiny_tokenizer_and_config()
    torch.manual_seed(0)
    out = tmp_path / f"imported_{variant}"
    import_affectgpt(sd or released_state(), out, variant=variant, text_config=cfg, tokenizer=tok)
    return out


# ----------------------------------------------------------------------------------------------------- reference


def lin(sd, name, x):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def reference_tokens(sd, visual: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
    """``encode_video_merge`` / ``encode_audio_merge`` (attention) and ``encode_multi_attention``, one sample."""
    att = lin(sd, "video_attention_mlp", visual)  # [t, 1], no softmax
    video_token = lin(sd, "affectgpt_proj", (visual.T @ att).squeeze(1))  # matmul(h^T, att)
    att = lin(sd, "audio_attention_mlp", audio)
    audio_token = lin(sd, "audio_llama_proj", (audio.T @ att).squeeze(1))
    v = lin(sd, "multi_video_embs", visual.mean(0))  # raw time means, not the pooled vectors
    a = lin(sd, "multi_audio_embs", audio.mean(0))
    weights = lin(sd, "fc_att", lin(sd, "attention_mlp", torch.cat([v, a])))  # no activation, no softmax
    fused = torch.stack([v, a], dim=1) @ weights[:, None]  # [W, 2] @ [2, 1]
    return {"visual": video_token, "audio": audio_token, "multi": lin(sd, "multi_llama_proj", fused.squeeze(1))}


def reference_logits(llm_dir: Path, sd, tokenizer, prompt: str, tokens: dict[str, torch.Tensor], variant: str):
    """Released inference: the prompt tokenised without special tokens (no bos), placeholders -> id 0 -> embed,
    feature rows written at the placeholder positions, a Qwen2 with the LoRA deltas merged into its weights."""
    from transformers import Qwen2ForCausalLM

    lm = Qwen2ForCausalLM.from_pretrained(llm_dir).eval()
    for i, layer in enumerate(lm.model.layers):
        for name in LINEARS:
            pre = f"llama_model.base_model.model.model.layers.{i}.{name}"
            block, proj = name.split(".")
            linear = getattr(getattr(layer, block), proj)
            linear.weight.data += (ALPHA / R) * sd[f"{pre}.lora_B.default.weight"] @ sd[f"{pre}.lora_A.default.weight"]
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids  # [1, L]
    here = {tokenizer.convert_tokens_to_ids(t): t for t in PLACEHOLDERS}
    temp = ids.clone()
    temp[torch.isin(temp, torch.tensor(list(here)))] = 0
    embeds = lm.model.embed_tokens(temp).clone()
    slot = {"<MultiHere>": "multi", "<AudioHere>": "audio", "<FaceHere>": "visual", "<FrameHere>": "visual"}
    for pos, t in enumerate(ids[0].tolist()):
        if t in here:
            embeds[0, pos] = tokens[slot[here[t]]]
    with torch.no_grad():
        return ids, lm(inputs_embeds=embeds).logits


@pytest.mark.parametrize("variant", ["face", "frame"])
def test_parity_with_the_released_forward(tmp_path, variant):
    sd = released_state()
    out = do_import(tmp_path, variant, sd)
    model, processor = load_model(out)  # the saved checkpoint, reloaded
    g = torch.Generator().manual_seed(1)
    visual, audio = torch.randn(8, DV, generator=g), torch.randn(8, DA, generator=g)
    modality = "face" if variant == "face" else "video"
    sample = Sample(affectgpt_messages("I passed the exam", variant), {modality: visual, "audio": audio})
    batch = processor([sample], add_generation_prompt=True)
    sentence = {
        "face": "Meanwhile, we uniformly sample raw frames from the video and extract faces from these frames: "
        "<Video><FaceHere></Video>. ",
        "frame": "Meanwhile, we uniformly sample raw frames from the video: <Video><FrameHere></Video>. ",
    }[variant]
    released_prompt = (  # get_prompt_for_multimodal, then answer_sample's tokenisation (no bos)
        "###Human: The audio and video merged info is: <Multi><MultiHere></Multi>. The audio content is as follows: "
        "<Audio><AudioHere></Audio>. " + sentence + "The subtitle of this video is: <Subtitle>I passed the exam"
        "</Subtitle>. Now, please answer my question based on all the provided information. Please infer the "
        "person's emotional state and provide your reasoning process. ###Assistant: "
    )
    tokens = reference_tokens(sd, visual, audio)
    ref_ids, ref = reference_logits(out / "llm", sd, processor.tokenizer, released_prompt, tokens, variant)
    assert batch.input_ids.tolist() == ref_ids.tolist()  # the same token ids: prompt and tokenisation as released
    model.eval()
    with torch.no_grad():
        ours = model(**batch.model_inputs()).logits
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    assert ours.abs().max() > 1e-2


def test_tokenizer_and_saved_facts(tmp_path):
    out = do_import(tmp_path, "face")
    published = json.loads((out / "run_config.json").read_text())["published"]
    tok = published["tokenizer"]
    assert tok["bos"] == "<|im_start|>" and tok["pad"] == tok["eos"] == "<|im_end|>"
    ids = [tok["placeholders"][t] for t in PLACEHOLDERS]
    assert ids == list(range(ids[0], ids[0] + 5))  # added one at a time, in the released order
    _, cfg = tiny_tokenizer_and_config()
    assert tok["embedding_rows"] == cfg.vocab_size  # no resize
    assert published["decoding"]["released"] == AFFECTGPT_SAMPLING and published["token_order"] == [
        "multi",
        "audio",
        "face",
    ]
    assert published["prompt"] == affectgpt_prompt("face")
    report = json.loads((out / "published" / "import_report.json").read_text())
    assert report["kept_unmapped"] == ["image_llama_proj.weight", "image_llama_proj.bias"]
    assert len(report["mapped"]) == LAYERS * 14 + 18
    config = json.loads((out / "emollm_config.json").read_text())
    assert list(config["modalities"]) == ["multi", "audio", "face"]
    assert config["modalities"]["multi"]["fuse"] == {"sources": ["face", "audio"], "kind": "attention"}
    assert config["chat_format"] == "affectgpt" and config["backbone"] == "affectgpt"


def test_training_layout_and_answer_cleanup():
    """Training rows: bos + prompt + answer '###' + eos with the loss on answer, '###' and eos; generation cuts at
    the release's stops and post-processes like answer_sample."""
    from emollm.backbones import get_chat_format

    fmt = get_chat_format("affectgpt")
    chat = fmt.render([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A."}])
    assert chat.text == "<|im_start|>###Human: Q ###Assistant: A.###<|im_end|>"
    assert [chat.text[s:e] for s, e in chat.train_spans] == ["A.###<|im_end|>"]
    prompt = fmt.render([{"role": "user", "content": "Q"}], add_generation_prompt=True)
    assert prompt.text == "###Human: Q ###Assistant: "  # no bos at inference, as released
    assert fmt.clean_answer("He is happy.###Human: more") == "He is happy."
    assert fmt.clean_answer("Assistant: calm###") == "calm"  # the text after the last "Assistant:"
    tok = build_tiny_tokenizer("affectgpt")
    from emollm.backbones.chat import tokenize_chat

    # the release's collater: [bos] + tok(prompt) + tok(answer + '###') + [eos], prompt and answer tokenised apart
    messages = [{"role": "user", "content": "Is he angry?"}, {"role": "assistant", "content": "The man is calm."}]
    ids, mask = tokenize_chat(tok, fmt, messages)

    def enc(text):
        return tok(text, add_special_tokens=False).input_ids

    prompt, target = enc("###Human: Is he angry? ###Assistant: "), enc("The man is calm.###")
    bos, eos = tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")
    assert ids == [bos, *prompt, *target, eos]
    assert mask == [False] * (1 + len(prompt)) + [True] * (len(target) + 1)
    stops = fmt.stop_token_sequences(tok)
    assert stops[0] == tok("###", add_special_tokens=False).input_ids[:1]
    from emollm.model.generation import SequenceStop

    crit = SequenceStop([[5, 6], [9]])
    done = crit(torch.tensor([[1, 5, 6], [1, 6, 5], [2, 3, 9]]))
    assert done.tolist() == [True, False, True]


def test_unknown_missing_and_mismatched_keys_are_named(tmp_path):
    sd = released_state()
    bad = {**sd, "multi_qformer.layer.0.weight": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"does not know: \['multi_qformer.layer.0.weight'\]"):
        do_import(tmp_path, "face", bad)
    gone = {k: v for k, v in sd.items() if not k.startswith("fc_att.")}
    with pytest.raises(ValueError, match=r"has no \['fc_att.weight', 'fc_att.bias'\]"):
        do_import(tmp_path, "face", gone)
    wrong = {**sd, "affectgpt_proj.weight": torch.zeros(H, DV + 1)}
    with pytest.raises(ValueError, match=r"video_attention_mlp.weight: shape \(1, 24\)|affectgpt_proj"):
        do_import(tmp_path, "face", wrong)
    lora = next(k for k in sd if "lora_A" in k)
    short = {k: v for k, v in sd.items() if k != lora}
    with pytest.raises(ValueError, match="lacks 1 LoRA tensor"):
        do_import(tmp_path, "face", short)


def test_files_apply_in_order_and_record_the_variant(tmp_path):
    tok, cfg = tiny_tokenizer_and_config()
    first, second = released_state(0), released_state(1)
    config = {"model": {"multi_fusion_type": "attention", "video_fusion_type": "attention"},
              "datasets": {"mercaptionplus": {"face_or_frame": "multiframe_audio_frame_text"}}}  # fmt: skip
    p1, p2 = tmp_path / "checkpoint_000010_loss_0.7.pth", tmp_path / "checkpoint_000030_loss_0.6.pth"
    opt = {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-5, "params": [0]}]}
    torch.save({"model": first, "optimizer": opt, "config": config, "scaler": None, "epoch": 10}, p1)
    partial = {k: v for k, v in second.items() if k.startswith("fc_att")}
    torch.save({"model": partial, "config": config, "epoch": 30}, p2)
    out = tmp_path / "out"
    torch.manual_seed(0)
    report = import_affectgpt([p1, p2], out, text_config=cfg, tokenizer=tok)
    assert report.settings["variant"] == "frame"  # from the file's face_or_frame
    assert [f["epoch"] for f in report.settings["source_files"]] == [10, 30]
    assert report.settings["source_files"][1]["overrides_earlier"] == 2
    model, _ = load_model(out)
    assert torch.equal(model.fusers["multi"].fc_att.weight, second["fc_att.weight"])  # the later file wins
    assert torch.equal(model.fusers["multi"].attention_mlp.weight, first["attention_mlp.weight"])
    with pytest.raises(ValueError, match="--variant face but the checkpoint was trained as"):
        import_affectgpt([p1], tmp_path / "o2", variant="face", text_config=cfg, tokenizer=tok)
    qformer = {"model": {"multi_fusion_type": "qformer"}}
    torch.save({"model": first, "config": qformer}, tmp_path / "q.pth")
    with pytest.raises(ValueError, match="multi_fusion_type is 'qformer'"):
        import_affectgpt([tmp_path / "q.pth"], tmp_path / "o3", text_config=cfg, tokenizer=tok)
    with pytest.raises(ValueError, match="one to three"):
        import_affectgpt([p1, p1, p1, p1], tmp_path / "o4", text_config=cfg, tokenizer=tok)


# ----------------------------------------------------------------------------------------------------- encoders


def tiny_encoders(root: Path) -> tuple[Path, Path]:
    """Tiny random CLIPModel (projection 24 = DV, 32 px) and HubertModel (4 layers, width 32 = DA) folders."""
    import transformers as tf

    from tests.encoders.conftest import _save, _ssl_config, make_tiny_dir

    clip = make_tiny_dir("clip", root)
    torch.manual_seed(0)
    hubert = _save(tf.HubertModel(_ssl_config(tf.HubertConfig, num_hidden_layers=4)), root / "hubert4",
                   {"do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor",
                    "sampling_rate": 16000, "feature_size": 1, "padding_value": 0.0})  # fmt: skip
    return clip, hubert


def released_clip_windows(wave: np.ndarray, sr: int = 16000, clips: int = 8, seconds: int = 2) -> np.ndarray:
    """ImageBind ``load_audio``: pad to 2 s, pytorchvideo ConstantClipsPerVideoSampler timepoints, slice."""
    if wave.shape[0] < seconds * sr:
        wave = np.pad(wave, (0, seconds * sr - wave.shape[0]))
    duration = wave.shape[0] / sr
    max_start = Fraction(max(duration - seconds, 0))
    uniform = Fraction(max_start, max(clips - 1, 1))
    out, index, last = [], 0, False
    while not last:
        start = uniform * index
        end = start + Fraction(seconds)
        index += 1
        last = index >= clips or uniform * index > max_start
        out.append(wave[int(start * sr) : int(end * sr)])
    return np.stack(out)


def test_live_encoders_follow_the_released_preprocessing(tmp_path):
    import transformers as tf

    from emollm.encoders import build_encoder

    clip_dir, hubert_dir = tiny_encoders(tmp_path)
    # CLIP: get_image_features of each frame, frames already at the processor's size (as decord's 224 x 224)
    clip = build_encoder("clip", feature_dim=DV, path=clip_dir, tokens="projected", resize="squash", pooling="frame")
    frames = torch.randint(0, 256, (1, 8, 32, 32, 3), dtype=torch.uint8)
    ours, n = clip(frames, torch.tensor([8]))
    ref_model = tf.CLIPModel.from_pretrained(clip_dir).eval()
    processor = tf.CLIPImageProcessor.from_pretrained(clip_dir)
    from PIL import Image

    pixels = processor(images=[Image.fromarray(f.numpy()) for f in frames[0]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref = ref_model.get_image_features(pixel_values=pixels)
        ref = getattr(ref, "pooler_output", ref)
    torch.testing.assert_close(ours[0], ref, rtol=1e-4, atol=1e-4)
    assert n.tolist() == [8]
    # HuBERT: 8 windows of 2 s, one joint normalisation (the feature extractor on an (8, 32000) tensor), the mean of
    # the last 4 hidden states, then the mean over time
    hub = build_encoder(
        "hubert", feature_dim=DA, path=hubert_dir, layers_mean=4, clips=8, clip_seconds=2.0,
        normalize_scope="sample", pooling="frame",
    )  # fmt: skip
    for seconds in (1.3, 3.7, 17.2):  # shorter than a clip (padded), overlapping windows, windows with gaps
        wave = np.random.default_rng(0).normal(0, 0.1, int(seconds * 16000)).astype(np.float32)
        ours, n = hub(torch.from_numpy(wave)[None], torch.tensor([wave.shape[0]]))
        windows = torch.from_numpy(released_clip_windows(wave))
        extractor = tf.Wav2Vec2FeatureExtractor.from_pretrained(hubert_dir)
        values = extractor(windows, sampling_rate=16000, return_tensors="pt").input_values[0]  # joint over windows
        ref_hubert = tf.HubertModel.from_pretrained(hubert_dir).eval()
        with torch.no_grad():
            hidden = ref_hubert(values, output_hidden_states=True).hidden_states
        ref = torch.stack(hidden)[[-4, -3, -2, -1]].mean(dim=0).mean(dim=1)  # [8, D]
        torch.testing.assert_close(ours[0], ref, rtol=1e-4, atol=1e-4)
        assert ours.shape == (1, 8, DA) and n.tolist() == [8]
    cached = torch.randn(2, 8, DA)  # its own cached output passes through
    assert torch.equal(hub(cached, torch.tensor([8, 8]))[0], cached)


def test_cli_import_with_encoders_then_analyze(tmp_path):
    """``emollm import affectgpt`` with --encoder-path, then ``emollm analyze --checkpoint`` on a generated clip."""
    from transformers import AutoModelForCausalLM

    from emollm.apps.analyze import main as analyze_main
    from emollm.media import fixtures

    tok, cfg = tiny_tokenizer_and_config()
    torch.manual_seed(0)
    lm_dir = tmp_path / "qwen"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(lm_dir)
    tok.save_pretrained(lm_dir)
    clip_dir, hubert_dir = tiny_encoders(tmp_path)
    ckpt = tmp_path / "checkpoint_000030.pth"
    torch.save({"model": released_state(), "epoch": 30}, ckpt)
    out = tmp_path / "affectgpt"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["affectgpt", str(ckpt), "--llm-path", str(lm_dir), "--encoder-path", f"clip={clip_dir}",
                     "--encoder-path", f"hubert={hubert_dir}", "--out", str(out)])  # fmt: skip
    assert code == 0, buf.getvalue()
    assert "imported affectgpt" in buf.getvalue() and "WARNING" not in buf.getvalue()
    published = json.loads((out / "run_config.json").read_text())["published"]
    assert published["encoders"]["face"]["options"] == {"tokens": "projected", "resize": "squash", "pooling": "frame"}
    assert published["encoders"]["face"]["media"]["frame_policy"] == "starts:8"
    assert published["encoders"]["audio"]["options"]["clips"] == 8
    clip = fixtures.make_face_clip(tmp_path / "clip.mp4", "astronaut", seconds=2.5, audio="tone").path
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = analyze_main([str(clip), "--checkpoint", str(out), "--labels", "happy,sad,angry", "--json",
                             "--max-new-tokens", "3"])  # fmt: skip
    assert code == 0
    result = json.loads(buf.getvalue())
    assert result["mode"] == "checkpoint" and abs(sum(result["probabilities"].values()) - 1) < 1e-4
    assert sorted(result["modalities"]) == ["audio", "face", "multi"]
    assert main(["affectgpt", str(ckpt), "--llm-path", str(lm_dir), "--encoder-path", "clap=x",
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip


def test_emollm_eval_runs_the_import(tmp_path):
    """``emollm eval`` on the imported checkpoint with cached encoder features (the branches' feature folders) and
    the released prompt: one token per slot, greedy and the released sampling both recorded."""
    from emollm_eval.runner import load_config, run_eval

    out = do_import(tmp_path, "face")
    names = ["c1", "c2", "c3"]
    rng = np.random.default_rng(0)
    for sub, dim in (("clip_face", DV), ("hubert_clips", DA)):
        (tmp_path / "feats" / sub).mkdir(parents=True)
        for n in names:
            np.save(tmp_path / "feats" / sub / f"{n}.npy", rng.standard_normal((8, dim)).astype(np.float32))
    gold = tmp_path / "gold.txt"
    gold.write_text("".join(f"{n} 8 {lab} 0.0\n" for n, lab in zip(names, ["happy", "sad", "angry"], strict=True)))
    prompt = affectgpt_prompt("face", "Which emotion label fits the character: {labels}?")
    base = [f"checkpoint={out}", "dataset=ncev", f"gold={gold}", f"feature_root={tmp_path / 'feats'}",
            "labels=[happy, sad, angry]", "label_order=[happy, sad, angry]", f"prompt={prompt}",
            "max_new_tokens=3", "n_bootstrap=0"]  # fmt: skip
    greedy = run_eval(load_config(None, [*base, f"output_dir={tmp_path / 'g'}"]), progress=False)
    assert greedy.metrics["modalities_used"] == ["audio", "face", "multi"] and greedy.metrics["n"] == 3
    assert greedy.metrics["fused_slots"] == {"multi": ["face", "audio"]} and greedy.metrics["decoding"] == "greedy"
    assert "###" not in "".join(r["answer"] for r in greedy.rows)  # cut at the release's stops
    sampled = run_eval(
        load_config(None, [*base, f"output_dir={tmp_path / 's'}", "decoding=affectgpt", "limit=1"]), progress=False
    )
    assert sampled.metrics["decoding"]["name"] == "affectgpt"
