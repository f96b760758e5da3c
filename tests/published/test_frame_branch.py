"""Emotion-LLaMA import with the EVA ViT-g frame branch (``--eva-path``), at tiny widths: H=64, LoRA r=4, feature
width 16, EVA width 32 (timm ``eva_giant_patch14_clip_224`` class, depth 3) but the real geometry: 448 px, 16 -> 32
position grid, 1025 EVA tokens, 256 merged patch tokens + CLS, 260 modality tokens in all.

The parity test compares the imported model's logits with a forward written here from the published formulas:
first frame -> PIL resize / CLIP normalisation -> EVA blocks[:-1] -> ``ln_vision`` (no affine) -> CLS and patches ->
4 patches merged -> ``llama_proj`` / ``cls_tk_llama_proj`` -> spliced with FaceMAE, VideoMAE, HuBERT into the prompt
in the released order, in both layouts.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from emollm.checkpoints import load_model
from emollm.checkpoints.published import (
    build_import_model,
    emotion_llama_messages,
    import_checkpoint,
    import_state_dict,
)
from emollm.checkpoints.published.cli import main
from emollm.model.processing import Sample
from tests.emollm.conftest import tiny_tokenizer
from tests.encoders.conftest import TINY_EVA_ARGS, make_tiny_eva
from tests.encoders.eva_reference import released_eva_tokens
from tests.published.test_emotion_llama import FEAT, LAYERS, H, R, analyze_with_features, lora_merged, released_state

W = TINY_EVA_ARGS["embed_dim"]
PATCH_TOKENS = 256


def released_state_eva(seed: int = 0, source: str = "emotion-llama") -> dict[str, torch.Tensor]:
    """The released key names with the EVA projectors shrunk to the tiny EVA width (4 x 32 and 32)."""
    sd = released_state(seed, source=source)
    g = torch.Generator().manual_seed(seed + 100)
    sd["llama_proj.weight"] = torch.randn(H, 4 * W, generator=g) * 0.1
    sd["llama_proj.bias"] = torch.randn(H, generator=g) * 0.1
    if source == "emotion-llama":
        sd["cls_tk_llama_proj.weight"] = torch.randn(H, W, generator=g) * 0.1
        sd["cls_tk_llama_proj.bias"] = torch.randn(H, generator=g) * 0.1
    return sd


@pytest.fixture(scope="module")
def eva_dir(tmp_path_factory):
    return make_tiny_eva(tmp_path_factory.mktemp("eva") / "eva_giant_patch14_clip_224")


def text_config(vocab: int):
    from emollm.backbones import get_backbone

    return get_backbone("llama2").text_config(n_layers=LAYERS, hidden=H, vocab_size=vocab, n_heads=4, n_kv_heads=4)


def tiny_build(eva_dir):
    tok = tiny_tokenizer("llama2")
    torch.manual_seed(0)
    return build_import_model(
        text_config=text_config(len(tok)), tokenizer=tok, rank=R, feature_dim=FEAT, eva_path=eva_dir, eva_width=W
    )


def clip_frames(seed: int = 0) -> torch.Tensor:
    """(T, H, W, 3) uint8: three different frames of a 60 x 80 clip."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, size=(3, 60, 80, 3), dtype=np.uint8))


def reference_logits(base_lm, sd, eva_sd, input_ids, frame_id, feature_ids, feats, frames, layout) -> torch.Tensor:
    """The published forward by hand (MiniGPT-v2 ``encode_img`` + Emotion-LLaMA's feature tokens + LoRA)."""
    lm = lora_merged(base_lm, sd)
    eva = released_eva_tokens(eva_sd, frames[0].numpy(), heads=TINY_EVA_ARGS["num_heads"])  # (1, 1025, W)
    cls, patches = eva[:, 0], eva[:, 1:]
    bs, pn, hs = patches.shape
    patches = patches.reshape(bs, pn // 4, hs * 4)  # image_embeds.view(bs, int(pn / 4), int(hs * 4))
    img = patches[0] @ sd["llama_proj.weight"].T + sd["llama_proj.bias"]  # (256, H)
    cls_tok = cls @ sd["cls_tk_llama_proj.weight"].T + sd["cls_tk_llama_proj.bias"]  # (1, H)
    projected = [
        feats[m] @ sd[f"feats_llama_proj{k}.weight"].T + sd[f"feats_llama_proj{k}.bias"]
        for k, m in ((1, "face"), (2, "video"), (3, "audio"))
    ]
    ids = input_ids[0]
    is_mod = torch.isin(ids, torch.tensor([frame_id, *feature_ids]))
    pos = is_mod.nonzero()[:, 0].tolist()
    emb = lm.get_input_embeddings()
    if layout == "published":  # get_context_emb: all 260 at <VideoHere>
        assert pos == list(range(pos[0], pos[0] + 260))
        pieces = [emb(ids[: pos[0]]), img, *projected, cls_tok, emb(ids[pos[-1] + 1 :])]
    else:  # prompt_wrap: 256 at <VideoHere>, FaceMAE, VideoMAE, HuBERT, CLS at <FeatureHere>
        a, b = pos[:PATCH_TOKENS], pos[PATCH_TOKENS:]
        assert a == list(range(a[0], a[0] + PATCH_TOKENS)) and b == list(range(b[0], b[0] + 4)) and b[0] > a[-1] + 1
        middle = emb(ids[a[-1] + 1 : b[0]])
        pieces = [emb(ids[: a[0]]), img, middle, *projected, cls_tok, emb(ids[b[-1] + 1 :])]
    return lm(inputs_embeds=torch.cat(pieces)[None]).logits


@pytest.mark.parametrize("layout", ["published", "trained"])
def test_parity_with_the_released_260_token_forward(eva_dir, layout):
    model, processor = tiny_build(eva_dir)
    base = copy.deepcopy(model.language_model.get_base_model())  # before the import: LoRA B = 0 -> plain weights
    sd = released_state_eva()
    report = import_state_dict(model, sd)
    assert report.kept == [] and report.notes == []
    assert report.mapped["llama_proj.weight"] == "projectors.frame.patch_proj.weight"
    assert report.mapped["cls_tk_llama_proj.bias"] == "projectors.frame.cls_proj.bias"
    assert len(report.mapped) == LAYERS * 4 + 10
    assert sum(model.num_tokens(m, 1) for m in model.config.modalities) == 260
    g = torch.Generator().manual_seed(1)
    feats = {m: torch.randn(1, FEAT, generator=g) for m in ("face", "video", "audio")}
    frames = clip_frames()
    sample = Sample(emotion_llama_messages("I passed", layout, frame_patches=256), features={**feats, "frame": frames})
    text = processor.render(sample)[0]["content"]
    p = processor.placeholders
    run = p["face"] + p["video"] + p["audio"]
    tail = " The person in video says: I passed. [emotion] Please determine which emotion label"
    if layout == "published":
        assert text.startswith(f"<video>{p['frame'] * 256}{run}{p['frame']}</video> <feature><FeatureHere></feature>")
    else:
        assert text.startswith(f"<video>{p['frame'] * 256}</video> <feature>{run}{p['frame']}</feature>{tail}")
    batch = processor([sample], add_generation_prompt=True)
    model.eval()
    eva_sd = load_file(str(eva_dir / "model.safetensors"))
    with torch.no_grad():
        ours = model(**batch.model_inputs()).logits
        ids = [processor.placeholder_ids[m] for m in ("face", "video", "audio")]
        args = (sd, eva_sd, batch.input_ids, processor.placeholder_ids["frame"], ids, feats, frames, layout)
        ref = reference_logits(base.eval(), *args)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    assert ours.abs().max() > 1e-3
    # the frame branch matters: without it (or with another first frame) the logits move
    other = frames.clone()
    other[0] = 255 - other[0]
    moved = Sample(sample.messages, features={**feats, "frame": other})
    with torch.no_grad():
        changed = model(**processor([moved], add_generation_prompt=True).model_inputs()).logits
    assert (changed - ours).abs().max() > 1e-3


def _llm_dir(model, processor, path):
    copy.deepcopy(model.language_model).merge_and_unload().save_pretrained(path)  # fresh LoRA: B = 0
    processor.tokenizer.save_pretrained(path)
    return path


def test_cli_import_save_load_roundtrip(eva_dir, tmp_path):
    model, processor = tiny_build(eva_dir)
    sd = released_state_eva()
    torch.save({"model": sd, "epoch": 3}, tmp_path / "released.pth")
    lm_dir = _llm_dir(model, processor, tmp_path / "llm")
    out = tmp_path / "imported"
    args = ["emotion-llama", str(tmp_path / "released.pth"), "--llm-path", str(lm_dir), "--eva-path", str(eva_dir)]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main([*args, "--out", str(out), "--layout", "trained"]) == 0
    assert "mapped   llama_proj.weight -> projectors.frame.patch_proj.weight" in buf.getvalue()
    assert "WARNING" not in buf.getvalue() and not (out / "published" / "unmapped.safetensors").exists()
    run = json.loads((out / "run_config.json").read_text())["published"]
    assert run["frame_branch"] is True and run["modality_tokens"] == 260 and run["layout"] == "trained"
    assert run["token_order"] == ["frame[patches]", "face", "video", "audio", "frame[cls]"]
    assert run["frame_encoder"] == {
        "encoder": "eva_vitg", "path": str(eva_dir.resolve()), "image_size": 448, "blocks": 2, "width": W,
        "tokens": 1025, "patch_tokens": 256,
    }  # fmt: skip
    prompt = json.loads(run["prompt"])
    assert {"type": "frame", "span": [0, 256]} in prompt and {"type": "frame", "span": [256, None]} in prompt
    report = json.loads((out / "published" / "import_report.json").read_text())
    assert report["kept_unmapped"] == [] and "cls_tk_llama_proj.weight" in report["mapped"]
    config = json.loads((out / "emollm_config.json").read_text())["modalities"]["frame"]
    assert config["encoder"] == "eva_vitg" and config["encoder_path"] == str(eva_dir.resolve())
    assert config["projector"]["kind"] == "emotion_llama_frame" and config["projector"]["merge"] == 4

    loaded, proc = load_model(out, dtype=torch.float32)  # the base LLM folder loads as llama2's float16 otherwise
    params = dict(loaded.named_parameters())
    assert torch.equal(params["projectors.frame.patch_proj.weight"], sd["llama_proj.weight"])
    assert torch.equal(params["projectors.frame.cls_proj.bias"], sd["cls_tk_llama_proj.bias"])
    assert len(loaded.towers["frame"].model.blocks) == 2
    g = torch.Generator().manual_seed(2)
    feats = {m: torch.randn(1, FEAT, generator=g) for m in ("face", "video", "audio")}
    messages = emotion_llama_messages("hello", "trained", frame_patches=256)
    sample = Sample(messages, features={**feats, "frame": clip_frames(3)})
    import_state_dict(model, sd)  # the same import, in memory
    model.eval()
    with torch.no_grad():
        a = loaded(**proc([sample], add_generation_prompt=True).model_inputs()).logits
        b = model(**processor([sample], add_generation_prompt=True).model_inputs()).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_minigpt_v2_with_eva_maps_llama_proj_and_initialises_the_cls_linear(eva_dir):
    model, _ = tiny_build(eva_dir)
    fresh_cls = model.projectors["frame"].cls_proj.weight.detach().clone()
    sd = released_state_eva(source="minigpt-v2")
    report = import_state_dict(model, sd, source="minigpt-v2")
    assert report.kept == [] and report.mapped["llama_proj.bias"] == "projectors.frame.patch_proj.bias"
    assert torch.equal(model.projectors["frame"].patch_proj.weight, sd["llama_proj.weight"])
    assert torch.equal(model.projectors["frame"].cls_proj.weight, fresh_cls)
    assert any(m.startswith("projectors.frame.cls_proj (EVA CLS linear, newly initialised") for m in report.missing)
    assert len(report.missing) == 4 and "newly initialised" in report.notes[0]


def test_eva_mismatches_are_clear_errors(eva_dir, tmp_path):
    tok = tiny_tokenizer("llama2")
    kwargs = dict(text_config=text_config(len(tok)), tokenizer=tok)
    with pytest.raises(FileNotFoundError, match=r"--eva-path\) .*nowhere does not exist"):
        import_checkpoint(released_state_eva(), tmp_path / "a", eva_path=tmp_path / "nowhere", **kwargs)
    with pytest.raises(ValueError, match=r"--eva-path .*outputs 32-d features, but feature_dim=1408.*1408-wide"):
        import_checkpoint(released_state(), tmp_path / "b", eva_path=eva_dir, **kwargs)  # the real 1408-wide proj
    model, _ = tiny_build(eva_dir)
    sd = released_state_eva()
    sd["llama_proj.weight"] = torch.zeros(H, 4 * W + 4)
    with pytest.raises(
        ValueError, match=r"llama_proj\.weight: shape \(64, 132\) takes 33-wide EVA tokens \(4 merged\)"
    ):
        import_state_dict(model, sd)
    sd = released_state_eva()
    del sd["cls_tk_llama_proj.bias"]
    with pytest.raises(ValueError, match=r"lacks 1 projector tensor\(s\) every released .*: cls_tk_llama_proj\.bias"):
        import_state_dict(model, sd)


def test_imported_checkpoint_with_frame_branch_analyzes_a_clip(eva_dir, tmp_path):
    """``emollm analyze CLIP --checkpoint DIR``: the EVA reads the clip's first frame, the features come as .npy;
    ``emollm serve --checkpoint DIR`` answers an upload of the clip the same way."""
    from emollm.apps.analyze import clip_features
    from emollm.media import fixtures, load_sample

    model, processor = tiny_build(eva_dir)
    torch.save({"model": released_state_eva()}, tmp_path / "released.pth")
    lm_dir = _llm_dir(model, processor, tmp_path / "llm")
    out = tmp_path / "imported"
    args = ["emotion-llama", str(tmp_path / "released.pth"), "--llm-path", str(lm_dir), "--eva-path", str(eva_dir)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*args, "--out", str(out)]) == 0
    clip = fixtures.make_face_clip(tmp_path / "clip.mp4", "astronaut", seconds=1.0, audio=None).path
    result = analyze_with_features(tmp_path, clip, out)
    assert sorted(result["modalities"]) == ["audio", "face", "frame", "video"]
    loaded, _ = load_model(out)
    features, missing = clip_features(loaded, clip, {m: str(tmp_path / f"{m}.npy") for m in ("face", "video", "audio")})
    first = load_sample(clip, modalities=["video"], frame_policy="first", max_side=None).frames
    assert missing == {} and features["frame"].shape == (1, *first.shape[1:])
    assert torch.equal(features["frame"], torch.from_numpy(first))  # the clip's first frame, full size
    served = serve_once(out, clip, tmp_path, {m: str(tmp_path / f"{m}.npy") for m in ("face", "video", "audio")})
    assert served["mode"] == "checkpoint" and served["modalities"] == result["modalities"]
    assert served["label"] == result["label"]
    assert served["probabilities"] == pytest.approx(result["probabilities"], abs=1e-4)


def serve_once(checkpoint, clip, tmp_path, feature_files) -> dict:
    """``emollm serve --checkpoint DIR``'s answer to one upload of ``clip`` (FastAPI's TestClient)."""
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (pip install 'emollm[serve]')")
    from fastapi.testclient import TestClient

    from emollm.apps.serve.app import create_app
    from emollm.apps.serve.settings import ServeSettings
    from tests.published.test_emotion_llama import LABELS

    options = {"feature_files": feature_files, "max_new_tokens": 3}
    settings = ServeSettings(
        checkpoint=str(checkpoint), labels=tuple(LABELS.split(",")), tmp_dir=str(tmp_path),
        analyzer_options=options,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client, open(clip, "rb") as f:
        response = client.post("/v1/analyze", files={"file": (clip.name, f)})
    assert response.status_code == 200, response.text
    return response.json()


RUN_YAML = """
model:
  backbone: llama2
  tiny: {{n_layers: {layers}, hidden: {hidden}, vocab_size: 1000, init_std: 0.2}}
  modality_type_embeddings: false
  modalities:
    face: {{feature_dim: {feat}, projector: {{kind: linear}}}}
    video: {{feature_dim: {feat}, projector: {{kind: linear}}}}
    audio: {{feature_dim: {feat}, projector: {{kind: linear}}}}
    frame: {{feature_dim: {width}, projector: {{kind: emotion_llama_frame, merge: 4}}}}  # cached EVA features
data:
  format: synthetic
  synthetic: {{num_train: 4, num_val: 0, noise: 0.3, seed: 0}}
  labels: [neutral, angry, happy, sad, worried, surprise]
  tasks: {{emotion: 1.0}}
  max_length: 256
train:
  stage: instruct
  init_from: {init}
  init_adapter: true
  lora: {{r: {rank}, alpha: 16, dropout: 0.05, targets: [q_proj, v_proj]}}
  max_steps: 1
  batch_size: 2
  output_dir: {out}
  threads: 1
  logging: {{progress: false, tensorboard: false}}
"""


def test_imported_checkpoint_initialises_a_training_run(eva_dir, tmp_path):
    """``train.init_from`` an import with the frame branch: the run starts from exactly the imported projectors
    (the EVA projectors included) and LoRA, then trains a step on cached frame features."""
    from emollm.backbones import get_backbone
    from emollm.runconfig import load_config
    from emollm_train.build import tiny_tokenizer as run_tokenizer
    from emollm_train.sft import run

    tok = run_tokenizer("llama2", 1000)  # the tokenizer and LLM shape a model.tiny run builds
    cfg = get_backbone("llama2").text_config(n_layers=LAYERS, hidden=H, vocab_size=len(tok), initializer_range=0.2)
    sd = released_state_eva()
    kv = cfg.num_key_value_heads * cfg.head_dim  # the tiny run model has grouped-query attention: v_proj is narrower
    for i in range(LAYERS):
        sd[f"llama_model.base_model.model.model.layers.{i}.self_attn.v_proj.lora_B.weight"] = torch.randn(kv, R) * 0.1
    imported = tmp_path / "imported"
    import_checkpoint(sd, imported, eva_path=eva_dir, text_config=cfg, tokenizer=tok)
    yaml = tmp_path / "run.yaml"
    out = tmp_path / "run"
    yaml.write_text(
        RUN_YAML.format(layers=LAYERS, hidden=H, feat=FEAT, width=W, init=imported, rank=R, out=out),
    )
    summary = run(load_config(yaml), init_only=True)
    start = out / "init"
    assert summary["final"] == str(start)
    want = load_file(str(imported / "projectors.safetensors"))
    got = load_file(str(start / "projectors.safetensors"))
    assert sorted(got) == sorted(want) and "projectors.frame.cls_proj.weight" in got
    for key, value in want.items():
        assert torch.equal(got[key], value), key
    assert torch.equal(got["projectors.frame.patch_proj.weight"], sd["llama_proj.weight"])
    adapter, source = (
        load_file(str(start / "adapter_model.safetensors")),
        load_file(str(imported / "adapter_model.safetensors")),
    )
    assert sorted(adapter) == sorted(source) and all(torch.equal(adapter[k], source[k]) for k in source)
    summary = run(load_config(yaml, [f"train.output_dir={tmp_path / 'run2'}"]))
    assert summary["steps"] == 1 and summary["last_loss"] > 0
    trained = load_file(str(tmp_path / "run2" / "final" / "projectors.safetensors"))
    assert not torch.equal(trained["projectors.frame.cls_proj.weight"], want["projectors.frame.cls_proj.weight"])


EVAL_PROMPT = (
    "<frame:0:256><face><video><audio><frame:256:></video> <feature><FeatureHere></feature> The person in video "
    "says: {subtitle}.  [emotion] Please determine which emotion label in the video represents: {labels}."
)


def test_eval_feeds_cached_eva_tokens_as_the_clip_would(eva_dir, tmp_path):
    """``emollm eval`` on an import with the frame branch, from a feature folder holding the EVA tokens that
    ``features extract --encoders eva_vitg`` caches: every answer is the one the model gives on the clips' own
    frames (EVA run live) with the same prompt, so the cached tokens land where the released layout puts them."""
    from emollm.model.generation import chat
    from emollm.model.prompts import fill_prompt
    from emollm_eval.runner import load_config, run_eval

    sd = released_state_eva()
    tok = tiny_tokenizer("llama2")
    checkpoint = tmp_path / "imported"
    torch.manual_seed(0)
    import_checkpoint(sd, checkpoint, eva_path=eva_dir, text_config=text_config(len(tok)), tokenizer=tok)
    model, processor = load_model(checkpoint)
    root, names = tmp_path / "features", ["s1", "s2", "s3"]
    dirs = {"face": "mae_340_UTT", "video": "maeV_399_UTT", "audio": "HL-UTT", "frame": "eva_vitg_first"}
    for d in dirs.values():
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(3)
    live: dict[str, dict[str, torch.Tensor]] = {}
    for i, name in enumerate(names):
        frames = clip_frames(seed=10 + i)
        with torch.no_grad():
            tokens, _ = model.towers["frame"](frames[None], torch.tensor([3]))
        np.save(root / dirs["frame"] / f"{name}.npy", tokens[0].numpy())
        live[name] = {"frame": frames}
        for m in ("face", "video", "audio"):
            feat = rng.normal(size=(FEAT,)).astype(np.float32)
            np.save(root / dirs[m] / f"{name}.npy", feat)
            live[name][m] = torch.from_numpy(feat)[None]
    gold = zip(names, ["happy", "sad", "angry"], strict=True)
    (root / "test3.txt").write_text("".join(f"{n} 0 {lab} -10\n" for n, lab in gold))
    (root / "subtitles.csv").write_text(
        "name,sentence\n" + "".join(f"{n},I am fine number {i}\n" for i, n in enumerate(names))
    )
    labels = ["neutral", "angry", "happy", "sad", "worried", "surprise"]
    overrides = [
        f"checkpoint={checkpoint}", "dataset=ncev", "ncev_format=ncev", f"gold={root / 'test3.txt'}", "split=test3",
        f"feature_root={root}", f"subtitles={root / 'subtitles.csv'}", f"output_dir={tmp_path / 'eval'}",
        "max_new_tokens=4", "batch_size=2", "n_bootstrap=0", "precision=fp32", f"labels=[{','.join(labels)}]",
        "features={" + ", ".join(f"{m}: {d}" for m, d in dirs.items()) + "}",
    ]  # fmt: skip
    config = load_config(None, overrides + [f"prompt={json.dumps(EVAL_PROMPT)}"])
    result = run_eval(config, progress=False)
    assert result.generated == 3
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        prompt = fill_prompt(EVAL_PROMPT, config.resolved_label_order(), f"I am fine number {i}")
        sample = Sample(messages=[{"role": "user", "content": prompt}], features=live[row["name"]], name=row["name"])
        rendered = processor.render(sample)[0]["content"]
        frame_ph = processor.placeholders["frame"]
        assert rendered.count(frame_ph) == 257 and frame_ph * 256 + processor.placeholders["face"] in rendered
        assert row["answer"] == chat(model, processor, [sample], max_new_tokens=4, do_sample=False)[0]
