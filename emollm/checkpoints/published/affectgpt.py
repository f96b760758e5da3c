"""Import the released AffectGPT v2 checkpoints (ICML 2025; ``emercoarse_..._bestsetup_bestfusion_lz`` = the face
model, ``mercaptionplus_..._bestsetup_bestfusion_frame_lz`` = the frame model) into emollm checkpoints.

Source (upstream fffca79 of ``my_affectgpt/``: ``models/affectgpt.py``, ``runners/runner_base.py``): ``torch.save(
{"model": trainable state dict, "optimizer", "config", "scaler", "epoch"})``, Qwen2.5-7B-Instruct (H = 3584), CLIP
ViT-L/14 (768) and chinese-hubert-large (1024) frozen and not saved.

Released key -> emollm parameter (each with ``.weight`` and ``.bias``; shapes at full size, H = 3584):

- ``llama_model.base_model.model.model.layers.{i}.{self_attn,mlp}.{q,k,v,o,gate,up,down}_proj.lora_{A,B}.default
  .weight`` ([16, in] / [out, 16]) -> peft LoRA of the language model;
- ``video_attention_mlp`` [1, 768] (a score per frame, with bias) / ``affectgpt_proj`` [H, 768] ->
  ``projectors.<visual>.score`` / ``.proj``;
- ``audio_attention_mlp`` [1, 1024] / ``audio_llama_proj`` [H, 1024] -> ``projectors.audio.score`` / ``.proj``;
- ``multi_video_embs`` [1024, 768] / ``multi_audio_embs`` [1024, 1024] -> ``fusers.multi.embed.<visual>`` /
  ``.audio``; ``attention_mlp`` [1024, 2048] / ``fc_att`` [2, 1024] -> ``fusers.multi.attention_mlp`` / ``.fc_att``;
- ``multi_llama_proj`` [H, 1024] -> ``projectors.multi`` (linear);
- ``image_llama_proj`` [H, 768] (single images; saved by the release, unused by its video setups) -> kept unchanged
  in ``published/unmapped.safetensors``.

``<visual>`` is ``face`` for the face model and ``video`` for the frame model (the same released modules serve both).
Any other key, or a missing one, is an error that names it.

The model (:func:`build_import_model`): backbone ``affectgpt`` (Qwen2.5 with the release's ``###Human:`` format,
placeholders, bos and pad), LoRA r from the file, alpha 32, dropout 0.05 on the seven linears of every layer; three
one-token slots in the released prompt order ``<Multi>``, ``<Audio>``, ``<Video>``: ``affectgpt_attn_pool`` on the
visual and audio encoder features, and the fused ``multi`` slot (AffectGPT's attention pre-fusion of their time
means). With ``--encoder-path clip=DIR --encoder-path hubert=DIR`` the encoders are live and their preprocessing is
recorded: CLIP ``get_image_features`` on 8 frames at segment starts (``starts:8``), squashed to 224 px (face crops
for the face model); HuBERT: 8 windows of 2 s, joint normalisation, mean of the last 4 hidden states, mean over time.
Without them the branches read cached features of those encoders (``emollm features extract``).

Differences from the released code, recorded in the checkpoint's ``published`` settings:

1. Faces come from emollm's detector (224 px crops with margin), not OpenFace's aligned crops; frames are decoded
   and resized by emollm (bicubic, antialiased), not decord; audio is decoded/resampled by emollm, not torchaudio.
2. The LLM loads in float16 as released (the backbone's default dtype; ``emollm eval`` ``dtype:`` changes it); the
   encoders run in float32 (the release: fp16 autocast on CUDA).
3. Prompts longer than the release's 800-token left truncation are not truncated.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from emollm.checkpoints.published.released import ImportReport, read_released_checkpoint, verify_import

__all__ = [
    "AFFECTGPT_SAMPLING",
    "QUESTIONS",
    "VARIANTS",
    "affectgpt_messages",
    "affectgpt_prompt",
    "build_import_model",
    "import_affectgpt",
    "import_affectgpt_state",
]

Variant = Literal["face", "frame"]
VARIANTS: dict[str, str] = {"face": "multiface_audio_face_text", "frame": "multiframe_audio_frame_text"}
"""emollm variant -> the release's ``face_or_frame`` setting."""
VISUAL: dict[str, str] = {"face": "face", "frame": "video"}
"""Variant -> the emollm modality of its visual branch."""
LORA_ALPHA = 32
LORA_DROPOUT = 0.05
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

QUESTIONS: dict[str, str] = {
    "description": "Please infer the person's emotional state and provide your reasoning process.",
    "ovlabel": "Please recognize all possible emotional states of the character.",
}
"""The released user questions (``base_dataset.py``): a description with reasoning, or open-vocabulary labels."""

AFFECTGPT_SAMPLING: dict[str, Any] = {
    "do_sample": True,
    "temperature": 1.0,
    "top_p": 0.9,
    "repetition_penalty": 1.0,
    "num_beams": 1,
    "max_new_tokens": 1200,
}
"""The released decoding (``inference_sample.py`` / ``answer_sample``); top-k is not passed, so the LLM's
``generation_config.json`` gives it (Qwen2.5-7B-Instruct: 20)."""

_VIDEO_SENTENCE = {
    "face": "Meanwhile, we uniformly sample raw frames from the video and extract faces from these frames: ",
    "frame": "Meanwhile, we uniformly sample raw frames from the video: ",
}

_LORA_KEY = re.compile(
    r"^llama_model\.base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\."
    r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.lora_(A|B)(?:\.default)?\.weight$"
)
_MODULES = (
    "video_attention_mlp",
    "affectgpt_proj",
    "audio_attention_mlp",
    "audio_llama_proj",
    "multi_video_embs",
    "multi_audio_embs",
    "attention_mlp",
    "fc_att",
    "multi_llama_proj",
)
_KEPT = ("image_llama_proj",)
_ADDED_ORDER = ("<ImageHere>", "<AudioHere>", "<FrameHere>", "<FaceHere>", "<MultiHere>")


# ----------------------------------------------------------------------------------------------------- prompt


def affectgpt_messages(
    subtitle: str | None, variant: Variant = "face", question: str = QUESTIONS["description"]
) -> list[dict[str, Any]]:
    """The released prompt (``get_prompt_for_multimodal``, ``multiface_audio_face_text`` or
    ``multiframe_audio_frame_text``) as one user message with modality parts; the ``affectgpt`` chat format wraps it
    in ``###Human: ... ###Assistant: ``. The literal ``<Multi>``/``<Audio>``/``<Video>``/``<Subtitle>`` tags are text.
    An empty subtitle stays as ``<Subtitle></Subtitle>``, as released."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "The audio and video merged info is: <Multi>"},
                {"type": "multi"},
                {"type": "text", "text": "</Multi>. The audio content is as follows: <Audio>"},
                {"type": "audio"},
                {"type": "text", "text": "</Audio>. " + _VIDEO_SENTENCE[variant] + "<Video>"},
                {"type": VISUAL[variant]},
                {
                    "type": "text",
                    "text": f"</Video>. The subtitle of this video is: <Subtitle>{subtitle or ''}</Subtitle>. Now, "
                    f"please answer my question based on all the provided information. {question}",
                },
            ],
        }
    ]


def affectgpt_prompt(variant: Variant = "face", question: str = QUESTIONS["description"]) -> str:
    """The released prompt as an ``emollm eval`` template string (markers ``<multi>``, ``<audio>``, ``<face>`` /
    ``<video>`` and ``{subtitle}``; the capitalised tags are plain text)."""
    parts = affectgpt_messages("{subtitle}", variant, question)[0]["content"]
    return "".join(p["text"] if p["type"] == "text" else f"<{p['type']}>" for p in parts)


# ----------------------------------------------------------------------------------------------------- model


def _json(path: Path) -> dict[str, Any]:
    file = path / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no config.json; give the local transformers folder of this encoder")
    return json.loads(file.read_text())


def encoder_branches(
    variant: Variant,
    *,
    visual_dim: int,
    audio_dim: int,
    width: int,
    clip_path: str | os.PathLike | None = None,
    hubert_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The three modality branches (``multi``, ``audio``, visual) as ``ModalityConfig`` objects, in prompt order."""
    from emollm.model.configuration import ModalityConfig, PreFusionConfig, ProjectorConfig

    visual = VISUAL[variant]
    pool = ProjectorConfig(kind="affectgpt_attn_pool")
    frames = "starts:8"  # load_video(n_frms=8, sampling="uniform"): np.arange(0, vlen, vlen / 8)
    if clip_path is not None:
        media = {"frame_policy": frames, "face_size": 224} if visual == "face" else {"frame_policy": frames}
        vis = ModalityConfig(
            encoder="clip_face" if visual == "face" else "clip",
            feature_dim=visual_dim,
            encoder_path=str(Path(clip_path).expanduser().resolve()),
            encoder_options={"tokens": "projected", "resize": "squash", "pooling": "frame"},
            projector=pool,
            media=media,
        )
    else:
        vis = ModalityConfig(feature_dim=visual_dim, projector=pool, feature_dir=f"clip_{visual}")
    if hubert_path is not None:
        aud = ModalityConfig(
            encoder="hubert",
            feature_dim=audio_dim,
            encoder_path=str(Path(hubert_path).expanduser().resolve()),
            encoder_options={
                "layers_mean": 4,
                "clips": 8,
                "clip_seconds": 2.0,
                "normalize_scope": "sample",
                "pooling": "frame",
            },
            projector=pool,
            media={"min_audio_duration": None, "silence_db": None},
        )
    else:
        aud = ModalityConfig(feature_dim=audio_dim, projector=pool, feature_dir="hubert_clips")
    multi = ModalityConfig(
        feature_dim=width, fuse=PreFusionConfig(sources=[visual, "audio"]), projector=ProjectorConfig(kind="linear")
    )
    return {"multi": multi, "audio": aud, visual: vis}


def build_import_model(
    variant: Variant = "face",
    *,
    llm_path: str | os.PathLike | None = None,
    text_config=None,
    tokenizer=None,
    rank: int = 16,
    visual_dim: int = 768,
    audio_dim: int = 1024,
    width: int | None = None,
    clip_path: str | os.PathLike | None = None,
    hubert_path: str | os.PathLike | None = None,
    dtype: torch.dtype | None = None,
):
    """``(model, processor)`` with AffectGPT's architecture (see the module docstring). ``text_config`` +
    ``tokenizer`` build a random LLM instead of loading ``llm_path`` (tests)."""
    from emollm.model.factory import build_model
    from emollm.model.lora import apply_lora

    modalities = encoder_branches(
        variant,
        visual_dim=visual_dim,
        audio_dim=audio_dim,
        width=width or max(visual_dim, audio_dim),
        clip_path=clip_path,
        hubert_path=hubert_path,
    )
    model, processor = build_model(
        "affectgpt",
        modalities,
        llm_path=llm_path,
        text_config=text_config,
        tokenizer=tokenizer,
        dtype=dtype,
        modality_type_embeddings=False,
    )
    apply_lora(model, lora_settings(rank), LORA_TARGETS)
    return model, processor


def lora_settings(rank: int):
    from emollm.settings import LoraSettings

    return LoraSettings(r=rank, alpha=LORA_ALPHA, dropout=LORA_DROPOUT, targets=list(LORA_TARGETS))


def _targets(model, visual: str) -> dict[str, nn.Linear]:
    fuser = model.fusers["multi"]
    multi = [m for m in model.projectors["multi"].modules() if isinstance(m, nn.Linear)]
    if len(multi) != 1:
        raise ValueError("projectors.multi must be one linear layer to take multi_llama_proj")
    return {
        "video_attention_mlp": model.projectors[visual].score,
        "affectgpt_proj": model.projectors[visual].proj,
        "audio_attention_mlp": model.projectors["audio"].score,
        "audio_llama_proj": model.projectors["audio"].proj,
        "multi_video_embs": fuser.embed[visual],
        "multi_audio_embs": fuser.embed["audio"],
        "attention_mlp": fuser.attention_mlp,
        "fc_att": fuser.fc_att,
        "multi_llama_proj": multi[0],
    }


def _param_name(model, param: nn.Parameter) -> str:
    for name, p in model.named_parameters():
        if p is param:
            return name
    raise KeyError("parameter not in model")


def _put(param: nn.Parameter, value: Tensor, key: str) -> None:
    if tuple(param.shape) != tuple(value.shape):
        raise ValueError(
            f"{key}: shape {tuple(value.shape)} does not fit the emollm parameter {tuple(param.shape)}; is the base "
            "LLM (--llm-path) the Qwen2.5-7B-Instruct and are the encoders the CLIP ViT-L/14 / chinese-hubert-large "
            "this checkpoint was trained with?"
        )
    param.data = value.detach().to(torch.float32).clone().contiguous()


def import_affectgpt_state(model, state: dict[str, Tensor], variant: Variant = "face") -> ImportReport:
    """Copy a released AffectGPT state dict into ``model`` (:func:`build_import_model`); return the report.

    Raises:
        ValueError: On an unknown key, a missing tensor, a shape or LoRA-rank mismatch; the message names the key.
    """
    from emollm.model.lora import is_peft

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    if not is_peft(model.language_model):
        raise ValueError("the model has no LoRA adapters; build it with build_import_model")
    visual = VISUAL[variant]
    report = ImportReport("affectgpt")
    lora = {n: p for n, p in model.language_model.named_parameters() if "lora_" in n}
    rank = next(p.shape[0] for n, p in lora.items() if ".lora_A." in n)
    targets = _targets(model, visual)
    seen: set[str] = set()
    unknown = []
    for key, value in state.items():
        match = _LORA_KEY.match(key)
        if match:
            layer, block, proj, ab = match.groups()
            dst = f"base_model.model.model.layers.{layer}.{block}.{proj}.lora_{ab}.default.weight"
            if dst not in lora:
                raise ValueError(
                    f"{key}: the emollm model has no {dst} (it has {model.config.text_config['num_hidden_layers']} "
                    "layers); is --llm-path the Qwen2.5-7B-Instruct this checkpoint was trained on?"
                )
            src_rank = value.shape[0] if ab == "A" else value.shape[-1]
            if value.ndim != 2 or src_rank != rank:
                raise ValueError(f"{key}: LoRA rank {src_rank} (shape {tuple(value.shape)}) but the model has r={rank}")
            _put(lora[dst], value, key)
            seen.add(dst)
            report.mapped[key] = f"language_model.{dst}"
            continue
        prefix, _, leaf = key.rpartition(".")
        if prefix in targets and leaf in ("weight", "bias"):
            param = getattr(targets[prefix], leaf)
            _put(param, value, key)
            report.mapped[key] = _param_name(model, param)
            continue
        if prefix in _KEPT and leaf in ("weight", "bias"):
            hidden = model.config.hidden_size
            if value.shape[0] != hidden:
                raise ValueError(f"{key}: output width {value.shape[0]} but the LLM hidden size is {hidden}")
            report.kept.append(key)
            continue
        unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} key(s) this AffectGPT importer does not know: {unknown[:10]} (it takes the bestsetup "
            "attention-fusion checkpoints: LoRA, the attention pooling and pre-fusion modules, the projectors)"
        )
    absent_lora = sorted(set(lora) - seen)
    if absent_lora:
        raise ValueError(f"the source lacks {len(absent_lora)} LoRA tensor(s) of the model, e.g. {absent_lora[:4]}")
    missing = [f"{m}.{leaf}" for m in _MODULES for leaf in ("weight", "bias") if f"{m}.{leaf}" not in state]
    if missing:
        raise ValueError(f"the source has no {missing[:6]}; is this an AffectGPT bestsetup (attention) checkpoint?")
    report.settings.update(lora_r=rank, lora_alpha=LORA_ALPHA, lora_scale=LORA_ALPHA / rank, modality_tokens=3)
    return report


# ----------------------------------------------------------------------------------------------------- files


def _variant_of(config: Any) -> str | None:
    """The ``face_or_frame`` setting recorded in a released file's ``config`` (datasets section), if any."""
    if not isinstance(config, dict):
        return None
    found = {
        str(d.get("face_or_frame"))
        for d in (config.get("datasets") or {}).values()
        if isinstance(d, dict) and d.get("face_or_frame")
    }
    return found.pop() if len(found) == 1 else None


def _check_config(config: Any, path: str) -> None:
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        return
    for key in ("multi_fusion_type", "video_fusion_type", "audio_fusion_type"):
        if key in model and model[key] != "attention":
            raise ValueError(
                f"{path}: {key} is {model[key]!r}; this importer takes the released bestsetup checkpoints "
                "(attention pre-fusion and attention pooling)"
            )
    for key in ("num_audio_query_token", "num_video_query_token", "num_multi_query_token"):
        if key in model and int(model[key]) != 1:
            raise ValueError(f"{path}: {key} is {model[key]}; the released bestsetup uses 1 token per modality")


def read_affectgpt_files(paths: list[str | os.PathLike]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read up to three released files safely and apply them in order, later files winning (``ckpt`` <
    ``ckpt_2`` < ``ckpt_3``). Returns the merged state and what was read (files, epochs, variant, per-file keys)."""
    if not 1 <= len(paths) <= 3:
        raise ValueError(f"give one to three checkpoint files (the release's ckpt, ckpt_2, ckpt_3), got {len(paths)}")
    state: dict[str, Tensor] = {}
    info: dict[str, Any] = {"files": [], "face_or_frame": None}
    for path in paths:
        part, meta = read_released_checkpoint(path)
        config = meta.get("config")
        _check_config(config, str(path))
        variant = _variant_of(config)
        if variant is not None:
            if info["face_or_frame"] not in (None, variant):
                before = info["face_or_frame"]
                raise ValueError(f"{path} records face_or_frame {variant!r}, the files before it {before!r}")
            info["face_or_frame"] = variant
        overridden = sorted(set(part) & set(state))
        state.update(part)
        info["files"].append(
            {
                "path": str(Path(path).resolve()),
                "epoch": meta.get("epoch") if isinstance(meta.get("epoch"), (int, float)) else None,
                "tensors": len(part),
                "overrides_earlier": len(overridden),
            }
        )
    return state, info


def import_affectgpt(
    ckpts: list[str | os.PathLike] | dict[str, Tensor],
    out: str | os.PathLike,
    *,
    variant: Variant | None = None,
    llm_path: str | os.PathLike | None = None,
    clip_path: str | os.PathLike | None = None,
    hubert_path: str | os.PathLike | None = None,
    text_config=None,
    tokenizer=None,
    dtype: torch.dtype | None = None,
) -> ImportReport:
    """Read released AffectGPT files (or a state dict), import them, save an emollm checkpoint at ``out``, verify it.

    ``variant`` (``face`` / ``frame``) defaults to what the file's config records (``face_or_frame``); a mismatch is
    an error. ``out`` gets the usual checkpoint files, ``run_config.json`` with ``published`` (source files, variant,
    prompt, tokenizer facts, encoders and their preprocessing, released decoding) and ``published/`` with
    ``import_report.json`` and ``unmapped.safetensors`` (``image_llama_proj``, unused by the video setups).
    """
    from safetensors.torch import save_file

    from emollm.checkpoints import save_checkpoint
    from emollm.settings import TrainableSpec

    if isinstance(ckpts, dict):
        state, info = ckpts, {"files": [], "face_or_frame": None}
    else:
        state, info = read_affectgpt_files(list(ckpts))
    recorded = info["face_or_frame"]
    from_file = next((v for v, name in VARIANTS.items() if recorded == name), None)
    if recorded is not None and from_file is None:
        known = list(VARIANTS.values())
        raise ValueError(f"the checkpoint records face_or_frame {recorded!r}; this importer takes {known}")
    if variant is None:
        variant = from_file or "face"
    elif from_file is not None and variant != from_file:
        raise ValueError(
            f"--variant {variant} but the checkpoint was trained as {recorded!r} (variant {from_file}); drop --variant"
        )
    if variant not in VARIANTS:
        raise ValueError(f"--variant must be one of {list(VARIANTS)}, got {variant!r}")
    dims = _dims(state)
    model, processor = build_import_model(
        variant,
        llm_path=llm_path,
        text_config=text_config,
        tokenizer=tokenizer,
        rank=dims["rank"],
        visual_dim=dims["visual"],
        audio_dim=dims["audio"],
        width=dims["width"],
        clip_path=clip_path,
        hubert_path=hubert_path,
        dtype=dtype,
    )
    report = import_affectgpt_state(model, state, variant)
    tok = processor.tokenizer
    visual = VISUAL[variant]
    report.settings.update(
        source="affectgpt",
        source_files=info["files"],
        variant=variant,
        face_or_frame=VARIANTS[variant],
        face_or_frame_recorded=recorded,
        token_order=["multi", "audio", visual],
        prompt=affectgpt_prompt(variant),
        questions=QUESTIONS,
        chat_format="affectgpt: '###Human: {prompt} ###Assistant: ', no bos at inference, stop on eos or ###",
        tokenizer={
            "bos": tok.bos_token,
            "eos": tok.eos_token,
            "pad": tok.pad_token,
            "placeholders": {t: tok.convert_tokens_to_ids(t) for t in _ADDED_ORDER},
            "embedding_rows": int(model.get_input_embeddings().weight.shape[0]),
        },
        decoding={"released": AFFECTGPT_SAMPLING, "default": "greedy"},
        encoders={
            m: {
                "encoder": c.encoder,
                "path": c.encoder_path,
                "options": c.encoder_options,
                "media": c.media,
                "feature_dim": c.feature_dim,
            }
            for m, c in model.config.modalities.items()
            if c.fuse is None
        },
        differences=[
            "faces from emollm's detector (224 px crops), not OpenFace's aligned crops"
            if variant == "face"
            else "frames decoded and squashed to 224 px by emollm (bicubic), not decord",
            "audio decoded and resampled by emollm, not torchaudio",
            "encoders in float32 (the release: fp16 autocast on CUDA)",
            "no 800-token left truncation of long prompts",
        ],
    )
    trainable = TrainableSpec(projectors=True, llm="lora")
    save_checkpoint(
        model,
        processor,
        out,
        lora=lora_settings(dims["rank"]),
        trainable=trainable,
        run_config={"published": report.settings},
    )
    extra = Path(out) / "published"
    extra.mkdir(exist_ok=True)
    if report.kept:
        kept = {k: state[k].detach().contiguous().clone() for k in report.kept}
        save_file(kept, str(extra / "unmapped.safetensors"), metadata={"format": "pt"})
    (extra / "import_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    verify_import(out, state, report)
    return report


def _dims(state: dict[str, Tensor]) -> dict[str, int]:
    """Widths the released tensors imply: LoRA rank, visual / audio encoder widths, the pre-fusion width."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise ValueError(f"the source has no {key}; is this an AffectGPT bestsetup (attention) checkpoint?")
        return tuple(state[key].shape)

    rank = next((int(v.shape[0]) for k, v in state.items() if _LORA_KEY.match(k) and ".lora_A" in k), None)
    if rank is None:
        raise ValueError("the source has no LoRA tensors (llama_model....lora_A.default.weight)")
    return {
        "rank": rank,
        "visual": shape("affectgpt_proj.weight")[1],
        "audio": shape("audio_llama_proj.weight")[1],
        "width": shape("multi_llama_proj.weight")[1],
    }
