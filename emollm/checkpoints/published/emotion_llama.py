"""Import the released Emotion-LLaMA and MiniGPT-v2 checkpoints into emollm checkpoints.

Source format (REFERENCE.md §1.1-1.3): ``torch.save({"model": state_dict, ...})`` of the trained parameters of a
LLaMA-2-7B-chat MiniGPT-v2 model (H = 4096):

=============================================================================  ===============  =====================
released key                                                                   shape            emollm
=============================================================================  ===============  =====================
``llama_model.base_model.model.model.layers.{i}.self_attn.{q,v}_proj.lora_A``  [r, H]           peft ``lora_A.default``
``...lora_B`` (``.weight``; with or without peft's ``.default``)               [H, r]           peft ``lora_B.default``
``feats_llama_proj1.{weight,bias}`` (FaceMAE ``mae_340_UTT``)                  [H, 1024], [H]   ``projectors.face``
``feats_llama_proj2.{weight,bias}`` (VideoMAE ``maeV_399_UTT``)                [H, 1024], [H]   ``projectors.video``
``feats_llama_proj3.{weight,bias}`` (HuBERT ``HL-UTT``)                        [H, 1024], [H]   ``projectors.audio``
``llama_proj.{weight,bias}`` (EVA patch tokens, 4 merged: 4 x 1408)            [H, 5632], [H]   ``projectors.frame``
``cls_tk_llama_proj.{weight,bias}`` (EVA CLS token)                            [H, 1408], [H]   ``projectors.frame``
``attention.*`` (unused fusion classifier), ``*rotary_emb.inv_freq``           -                skipped
=============================================================================  ===============  =====================

The two EVA projectors become ``projectors.frame.patch_proj`` and ``projectors.frame.cls_proj`` (the
``emotion_llama_frame`` projector of the ``frame`` branch) when the EVA ViT-g weights are given (``--eva-path``);
without them they are checked and kept unchanged in ``published/unmapped.safetensors``.

LoRA: r = 64, alpha = 16 (scale alpha / r = 0.25), dropout 0.05, on ``q_proj``/``v_proj`` of every layer; the rank is
read from the tensors, alpha is not stored in the file and is passed in (16 for both released models).

Token layouts (``LAYOUTS``; the one used is recorded in ``run_config.json`` under ``published``):

- ``published``: what the released inference code (``get_context_emb``) does: the prompt is split on
  ``<VideoHere>`` only, and all 260 modality tokens go there, in the order [256 EVA patch tokens] [FaceMAE]
  [VideoMAE] [HuBERT] [EVA CLS]; ``<feature><FeatureHere></feature>`` stays literal text.
- ``trained``: what training (``prompt_wrap``) did: the 256 EVA patch tokens at ``<VideoHere>``, the other tokens
  (FaceMAE, VideoMAE, HuBERT, EVA-CLS) at ``<FeatureHere>``; both placeholders are removed from the text.

The frame branch places its 257 tokens in two runs with token spans (``emollm.model.processing``): span [0, 256)
where the patch tokens go, span [256, 257) after the HuBERT token.

Differences from the released code:

1. The EVA ViT-g frame branch needs the EVA weights, which the released ``.pth`` files do not hold: with
   ``--eva-path`` (a local timm ``eva_giant_patch14_clip_224`` folder or an EVA01-g-14 weights file, see
   :mod:`emollm.encoders.eva`) the import is the published 260-token model: the first frame at 448 px, EVA blocks
   0..38, the non-affine ``ln_vision``, ``llama_proj`` on 4 merged patch tokens and ``cls_tk_llama_proj`` on the CLS
   token. The ViT runs in float32 (the release casts it to fp16) and frames come from emollm's decoder, not
   OpenCV. Without ``--eva-path`` the import gives the 3 feature tokens only (no patch tokens, no CLS token):
   ``llama_proj`` and ``cls_tk_llama_proj`` are checked and kept unchanged in ``published/unmapped.safetensors``
   and drive nothing. A MiniGPT-v2 import with ``--eva-path`` maps its ``llama_proj`` onto the patch linear; the CLS
   linear and the feature projectors are newly initialised, as in Emotion-LLaMA's own training from MiniGPT-v2.
2. Token order within a run is the released one (face, video, audio); emollm's default prompts use video, face,
   audio, so use :func:`emotion_llama_messages` (or the eval YAML) to reproduce the released order.
3. Tokenisation: the released code tokenises the text segments between placeholders separately (BOS on the first
   only), so the segment after the placeholders starts with sentencepiece's dummy-prefix space; emollm tokenises
   the whole prompt with the placeholders as special tokens. The embeddings of the modality tokens and of the text
   ids are identical; the ids of the first text token after the placeholders may differ.
4. The released prompt's literal ``<video>`` tag collides with emollm's ``<video>`` marker in *string* prompts (eval
   YAML templates); :func:`emotion_llama_messages` writes it as a text part, which is exact. The eval YAML cannot.
5. ``attention.*`` (the unused classifier head, issue #131) and ``rotary_emb.inv_freq`` buffers are skipped.
6. Trained tensors are stored as float32 (a lossless upcast of the released fp16/fp32 values); the base LLM keeps
   its own dtype.
7. The released demo zeroes the FaceMAE/VideoMAE features (REFERENCE.md §1.9); emollm feeds the real ones.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from emollm.checkpoints.published.released import ImportReport, read_released_state_dict, verify_import

__all__ = [
    "EMOTION_INSTRUCTION",
    "FEATURE_PROJECTORS",
    "FRAME_PROJECTORS",
    "LAYOUTS",
    "SOURCES",
    "Layout",
    "build_import_model",
    "emotion_llama_messages",
    "import_checkpoint",
    "import_state_dict",
    "verify_import",
]

Layout = Literal["published", "trained"]
LAYOUTS: tuple[str, ...] = ("published", "trained")
SOURCES: tuple[str, ...] = ("emotion-llama", "minigpt-v2")

FEATURE_PROJECTORS: dict[str, str] = {
    "feats_llama_proj1": "face",
    "feats_llama_proj2": "video",
    "feats_llama_proj3": "audio",
}
"""Released projector -> emollm modality, in the released token order (``torch.cat((FaceMAE, VideoMAE, Audio))``)."""
FRAME_PROJECTORS: tuple[str, ...] = ("llama_proj", "cls_tk_llama_proj")
"""EVA ViT-g projectors: patch tokens (4 merged, 5632 -> H) and the CLS token (1408 -> H)."""
EVA_WIDTH = 1408
PATCH_MERGE = 4
LORA_ALPHA = 16
LORA_DROPOUT = 0.05
LORA_TARGETS = ("q_proj", "v_proj")

EMOTION_LABELS: tuple[str, ...] = (
    "happy",
    "sad",
    "neutral",
    "angry",
    "worried",
    "surprise",
    "fear",
    "contempt",
    "doubt",
)
EMOTION_INSTRUCTION = "[emotion] Please determine which emotion label in the video represents: {labels}."
"""The released ``emotion`` task prompt, with its MiniGPT-v2 task identifier."""

_LORA_KEY = re.compile(
    r"^llama_model\.base_model\.model\.model\.layers\.(\d+)\.self_attn\.(q_proj|v_proj)\.lora_(A|B)(?:\.default)?\.weight$"
)
_SKIP = (
    (re.compile(r"^attention\."), "the unused Attention fusion classifier of MiniGPTBase (dead code, issue #131)"),
    (re.compile(r"rotary_emb\.inv_freq$"), "rotary inverse frequencies: a buffer transformers recomputes"),
)


def emotion_llama_messages(
    sentence: str | None,
    layout: Layout = "published",
    *,
    labels: tuple[str, ...] | list[str] = EMOTION_LABELS,
    instruction: str = EMOTION_INSTRUCTION,
    modalities: tuple[str, ...] = ("face", "video", "audio"),
    frame_patches: int | None = None,
) -> list[dict[str, Any]]:
    """The released inference prompt as one user message, with modality parts where ``layout`` puts them.

    ``published``: ``<video>{tokens}</video> <feature><FeatureHere></feature> The person in video says: {sentence}.
    [emotion] ...``; ``trained``: ``<video>{patches}</video> <feature>{tokens}</feature> The person ...``. Literal
    tags are text parts, so emollm's ``<video>`` marker never reads them. The chat format adds ``<s>[INST] ...
    [/INST]``.

    Args:
        sentence: The subtitle, or None.
        layout: ``published`` or ``trained``.
        labels: The label list of the instruction.
        instruction: The task prompt.
        modalities: The feature tokens, in the released order.
        frame_patches: With a frame branch: its number of patch tokens (256). The frame's span [0, frame_patches)
            comes first (``<VideoHere>``), its CLS token (span [frame_patches, end)) after the feature tokens.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    tokens: list[dict[str, Any]] = [{"type": m} for m in modalities]
    patches: list[dict[str, Any]] = []
    if frame_patches is not None:
        patches = [{"type": "frame", "span": [0, frame_patches]}]
        tokens.append({"type": "frame", "span": [frame_patches, None]})
    said = f" The person in video says: {sentence}. " if sentence else " "
    tail = said + instruction.format(labels=", ".join(labels))
    if layout == "published":
        parts = [{"type": "text", "text": "<video>"}, *patches, *tokens]
        parts.append({"type": "text", "text": "</video> <feature><FeatureHere></feature>" + tail})
    else:
        parts = [{"type": "text", "text": "<video>"}, *patches, {"type": "text", "text": "</video> <feature>"}]
        parts += [*tokens, {"type": "text", "text": "</feature>" + tail}]
    return [{"role": "user", "content": parts}]


def _lora_params(model) -> dict[str, nn.Parameter]:
    from emollm.model.lora import is_peft

    if not is_peft(model.language_model):
        raise ValueError("the model has no LoRA adapters; build it with build_import_model")
    return {n: p for n, p in model.language_model.named_parameters() if "lora_" in n}


def _linear(model, modality: str) -> nn.Linear:
    linears = [m for m in model.projectors[modality].modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        raise ValueError(f"projectors.{modality} must be one linear layer to take an Emotion-LLaMA projector")
    return linears[0]


def _param_name(model, param: nn.Parameter) -> str:
    for name, p in model.named_parameters():
        if p is param:
            return name
    raise KeyError("parameter not in model")


def _put(param: nn.Parameter, value: Tensor, key: str) -> None:
    if tuple(param.shape) != tuple(value.shape):
        raise ValueError(
            f"{key}: shape {tuple(value.shape)} does not fit the emollm parameter {tuple(param.shape)}; "
            "is the base LLM (--llm-path) the LLaMA-2-7B-chat this checkpoint was trained on?"
        )
    param.data = value.detach().to(torch.float32).clone().contiguous()


def import_state_dict(model, state: dict[str, Tensor], *, source: str = "emotion-llama") -> ImportReport:
    """Copy a released state dict into ``model`` (built by :func:`build_import_model`); return the report.

    With a ``frame`` branch (``build_import_model(eva_path=...)``) ``llama_proj`` and ``cls_tk_llama_proj`` go to
    ``projectors.frame.patch_proj`` / ``cls_proj``; without one they are checked and listed as kept.

    Raises:
        ValueError: On a shape or LoRA-rank mismatch, an unknown key, or a missing trained tensor; the message
            names the key.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    report = ImportReport(source)
    hidden = model.config.hidden_size
    frame = model.projectors["frame"] if "frame" in model.config.modalities else None
    if frame is not None and not (hasattr(frame, "patch_proj") and hasattr(frame, "cls_proj")):
        raise ValueError("projectors.frame must be an 'emotion_llama_frame' projector to take llama_proj")
    lora = _lora_params(model)
    rank = next(p.shape[0] for n, p in lora.items() if ".lora_A." in n)
    seen_lora: set[str] = set()
    unknown = []
    for key, value in state.items():
        match = _LORA_KEY.match(key)
        if match:
            layer, proj, ab = match.groups()
            dst = f"base_model.model.model.layers.{layer}.self_attn.{proj}.lora_{ab}.default.weight"
            if dst not in lora:
                raise ValueError(
                    f"{key}: the emollm model has no {dst} "
                    f"(it has {model.config.text_config['num_hidden_layers']} layers)"
                )
            src_rank = value.shape[0] if ab == "A" else value.shape[-1]
            if value.ndim != 2 or src_rank != rank:
                raise ValueError(
                    f"{key}: LoRA rank {src_rank} (shape {tuple(value.shape)}) but the model's LoRA has r={rank}"
                )
            _put(lora[dst], value, key)
            seen_lora.add(dst)
            report.mapped[key] = f"language_model.{dst}"
            continue
        reason = next((why for pattern, why in _SKIP if pattern.search(key)), None)
        if reason:
            report.skipped[key] = reason
            continue
        prefix, _, leaf = key.rpartition(".")
        if prefix in FEATURE_PROJECTORS and leaf in ("weight", "bias") and source == "emotion-llama":
            linear = _linear(model, FEATURE_PROJECTORS[prefix])
            param = linear.weight if leaf == "weight" else linear.bias
            _put(param, value, key)
            report.mapped[key] = _param_name(model, param)
            continue
        if prefix in FRAME_PROJECTORS and leaf in ("weight", "bias") and frame is not None:
            linear = frame.patch_proj if prefix == "llama_proj" else frame.cls_proj
            param = linear.weight if leaf == "weight" else linear.bias
            if value.ndim == 2 and tuple(value.shape) != tuple(param.shape) and value.shape[0] == hidden:
                per = PATCH_MERGE if prefix == "llama_proj" else 1
                raise ValueError(
                    f"{key}: shape {tuple(value.shape)} takes {value.shape[1] // per}-wide EVA tokens"
                    f"{' (4 merged)' if per > 1 else ''}, but the frame encoder (--eva-path) outputs "
                    f"{frame.in_dim}-wide tokens; give the EVA ViT-g this checkpoint was trained with"
                )
            _put(param, value, key)
            report.mapped[key] = _param_name(model, param)
            continue
        if prefix in FRAME_PROJECTORS and leaf in ("weight", "bias"):
            width = {"llama_proj": EVA_WIDTH * PATCH_MERGE, "cls_tk_llama_proj": EVA_WIDTH}[prefix]
            want = (hidden, width) if leaf == "weight" else (hidden,)
            if tuple(value.shape) != want and tuple(value.shape[:1]) != (hidden,):
                raise ValueError(f"{key}: shape {tuple(value.shape)}, expected {want}")
            if tuple(value.shape[:1]) != (hidden,):
                raise ValueError(f"{key}: output width {value.shape[0]} but the LLM hidden size is {hidden}")
            report.kept.append(key)
            continue
        unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} key(s) this {source} importer does not know: {unknown[:10]}")
    absent = sorted(set(lora) - seen_lora)
    if absent:
        raise ValueError(f"the source lacks {len(absent)} LoRA tensor(s) of the model, e.g. {absent[:4]}")
    needed = [f"{p}.{leaf}" for p in FEATURE_PROJECTORS for leaf in ("weight", "bias")]
    if frame is not None:
        needed += [f"{p}.{leaf}" for p in FRAME_PROJECTORS for leaf in ("weight", "bias")]
    if source == "emotion-llama":
        lacking = [key for key in needed if key not in state]
        if lacking:
            raise ValueError(
                f"the file lacks {len(lacking)} projector tensor(s) every released Emotion-LLaMA checkpoint has: "
                f"{', '.join(lacking[:6])}{' ...' if len(lacking) > 6 else ''} ({_holds(state)}); a MiniGPT-v2 file "
                "imports with `emollm import minigpt-v2`"
            )
    else:
        report.missing = [
            f"projectors.{m} (feature projector, newly initialised)" for m in model.config.modalities if m != "frame"
        ]
        if frame is not None:
            lacking = [f"llama_proj.{leaf}" for leaf in ("weight", "bias") if f"llama_proj.{leaf}" not in state]
            if lacking:
                raise ValueError(
                    f"the file lacks {', '.join(lacking)}, the EVA patch projector every released MiniGPT-v2 "
                    f"checkpoint has and the frame branch (--eva-path) needs ({_holds(state)}); import without "
                    "--eva-path for LoRA only"
                )
            if "cls_tk_llama_proj.weight" not in state:
                report.missing.append(
                    "projectors.frame.cls_proj (EVA CLS linear, newly initialised: MiniGPT-v2 has no cls_tk_llama_proj)"
                )
    tokens = sum(model.num_tokens(m, 1) for m in model.config.modalities)
    if source == "emotion-llama" and frame is None:
        report.notes.append(
            "the published Emotion-LLaMA saw 260 modality tokens (256 EVA patch tokens, FaceMAE, VideoMAE, HuBERT, "
            f"EVA CLS); this import gives {tokens} feature tokens (FaceMAE, VideoMAE, HuBERT): no frame tokens and "
            "no CLS token. llama_proj and cls_tk_llama_proj are kept unchanged in published/unmapped.safetensors; "
            "import with --eva-path EVA_VIT_G to get the frame branch."
        )
    elif frame is None:
        report.notes.append(
            "MiniGPT-v2 imported as LoRA only: there is no EVA frame branch (no --eva-path), so its llama_proj is "
            "kept in published/unmapped.safetensors and drives nothing; the feature projectors are newly initialised."
        )
    elif source != "emotion-llama":
        report.notes.append(
            "MiniGPT-v2 imported with its EVA branch: LoRA and llama_proj (256 patch tokens) are MiniGPT-v2's; the "
            "CLS linear and the FaceMAE/VideoMAE/HuBERT projectors are newly initialised (train them, as Emotion-LLaMA "
            "did from this checkpoint)."
        )
    report.settings.update(lora_r=rank, lora_alpha=LORA_ALPHA, lora_scale=LORA_ALPHA / rank, modality_tokens=tokens)
    return report


def build_import_model(
    *,
    llm_path: str | os.PathLike | None = None,
    text_config=None,
    tokenizer=None,
    rank: int = 64,
    feature_dim: int = 1024,
    eva_path: str | os.PathLike | None = None,
    eva_width: int = EVA_WIDTH,
    dtype: torch.dtype | None = None,
):
    """``(model, processor)``: LLaMA-2 backbone, Emotion-LLaMA's three feature branches (linear, no type
    embeddings), LoRA r=``rank``, alpha 16, dropout 0.05 on q_proj/v_proj. ``text_config``+``tokenizer`` build a
    random tiny LLM instead of loading ``llm_path`` (tests).

    With ``eva_path`` the model also has the ``frame`` branch: the ``eva_vitg`` encoder (first frame, 448 px, blocks
    0..38, non-affine LayerNorm) loaded from that local path and an ``emotion_llama_frame`` projector (4 merged
    patches -> ``patch_proj``, CLS -> ``cls_proj``); ``eva_width`` is the EVA token width the projectors expect."""
    from emollm.model.configuration import ModalityConfig, ProjectorConfig
    from emollm.model.factory import build_model, emotion_llama_modalities
    from emollm.model.lora import apply_lora

    modalities = emotion_llama_modalities(feature_dim=feature_dim)
    if eva_path is not None:
        modalities["frame"] = ModalityConfig(
            encoder="eva_vitg",
            feature_dim=eva_width,
            encoder_path=str(Path(eva_path).expanduser().resolve()),
            projector=ProjectorConfig(kind="emotion_llama_frame", merge=PATCH_MERGE),
        )
    try:
        model, processor = build_model(
            "llama2",
            modalities,
            llm_path=llm_path,
            text_config=text_config,
            tokenizer=tokenizer,
            dtype=dtype,
            modality_type_embeddings=False,
        )
    except ValueError as e:
        if "eva_vitg" not in str(e):
            raise
        raise ValueError(
            f"--eva-path {eva_path}: {e} (the checkpoint's EVA projectors take {eva_width}-wide tokens)"
        ) from None
    apply_lora(model, lora_settings(rank), LORA_TARGETS)
    return model, processor


def lora_settings(rank: int):
    from emollm.settings import LoraSettings

    return LoraSettings(r=rank, alpha=LORA_ALPHA, dropout=LORA_DROPOUT, targets=list(LORA_TARGETS))


def _eva_width(state: dict[str, Tensor]) -> int:
    """The EVA token width the released projectors take (1408): from ``cls_tk_llama_proj`` or ``llama_proj``."""
    cls = state.get("cls_tk_llama_proj.weight")
    if cls is not None and cls.ndim == 2:
        return int(cls.shape[1])
    patch = state.get("llama_proj.weight")
    if patch is None or patch.ndim != 2 or patch.shape[1] % PATCH_MERGE:
        raise ValueError(
            "--eva-path: the source has no llama_proj.weight of shape [H, 4 x EVA width]; it has no EVA projector to "
            "drive the frame branch"
        )
    return int(patch.shape[1]) // PATCH_MERGE


def _holds(state: dict[str, Tensor]) -> str:
    """``it holds 12 tensors, e.g. a.weight, b.bias`` (what a refused file has instead)."""
    keys = list(state)
    return f"it holds {len(keys)} tensor(s), e.g. {', '.join(keys[:3])}"


def _source_rank(state: dict[str, Tensor], source: str = "emotion-llama") -> int:
    for key, value in state.items():
        m = _LORA_KEY.match(key)
        if m and m.group(3) == "A":
            if value.ndim != 2 or value.shape[0] < 1:
                raise ValueError(f"{key}: shape {tuple(value.shape)} is not a LoRA A matrix [r, hidden]")
            return int(value.shape[0])
    raise ValueError(
        "the file has no LoRA tensors "
        "(llama_model.base_model.model.model.layers.N.self_attn.{q,v}_proj.lora_A.weight), "
        f"which every released {source} checkpoint has on q_proj/v_proj of each layer ({_holds(state)}): a "
        "checkpoint of another model, or one saved without its LoRA?"
    )


def import_checkpoint(
    ckpt: str | os.PathLike | dict[str, Tensor],
    out: str | os.PathLike,
    *,
    source: str = "emotion-llama",
    layout: Layout = "published",
    llm_path: str | os.PathLike | None = None,
    eva_path: str | os.PathLike | None = None,
    text_config=None,
    tokenizer=None,
    dtype: torch.dtype | None = None,
) -> ImportReport:
    """Read a released checkpoint, import it, save an emollm checkpoint at ``out`` and verify it.

    ``out`` gets the usual checkpoint files, ``run_config.json`` with ``published`` (source, layout, prompt, LoRA,
    tokens, frame branch), and ``published/`` with ``import_report.json`` and, without ``eva_path``,
    ``unmapped.safetensors`` (the kept EVA projectors). With ``eva_path`` (a local EVA ViT-g, see
    :mod:`emollm.encoders.eva`) the model gets the ``frame`` branch and the EVA projectors drive it: the published
    260-token model. The checkpoint records ``eva_path``; the EVA weights are not copied.
    """
    from safetensors.torch import save_file

    from emollm.checkpoints import save_checkpoint
    from emollm.settings import TrainableSpec

    if layout not in LAYOUTS:
        raise ValueError(f"--layout must be one of {LAYOUTS}, got {layout!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    state = ckpt if isinstance(ckpt, dict) else read_released_state_dict(ckpt)
    rank = _source_rank(state, source)
    feature = state.get("feats_llama_proj1.weight")
    feature_dim = int(feature.shape[1]) if feature is not None and feature.ndim == 2 else 1024
    model, processor = build_import_model(
        llm_path=llm_path,
        text_config=text_config,
        tokenizer=tokenizer,
        rank=rank,
        feature_dim=feature_dim,
        eva_path=eva_path,
        eva_width=_eva_width(state) if eva_path is not None else EVA_WIDTH,
        dtype=dtype,
    )
    report = import_state_dict(model, state, source=source)
    frame = "frame" in model.config.modalities
    patches = model.num_tokens("frame", 1) - 1 if frame else None
    report.settings.update(
        source=source,
        source_file=None if isinstance(ckpt, dict) else str(Path(ckpt).resolve()),
        layout=layout,
        frame_branch=frame,
        token_order=["frame[patches]", "face", "video", "audio", "frame[cls]"] if frame else ["face", "video", "audio"],
        prompt=json.dumps(emotion_llama_messages("{sentence}", layout, frame_patches=patches)[0]["content"]),
    )
    if frame:
        cfg = model.config.modalities["frame"]
        tower = model.towers["frame"]
        report.settings["frame_encoder"] = {
            "encoder": cfg.encoder,
            "path": cfg.encoder_path,
            "image_size": tower.image_size,
            "blocks": len(tower.model.blocks),
            "width": tower.output_dim,
            "tokens": tower.num_tokens(1),
            "patch_tokens": patches,
        }
    trainable = TrainableSpec(projectors=True, llm="lora")
    save_checkpoint(
        model, processor, out, lora=lora_settings(rank), trainable=trainable, run_config={"published": report.settings}
    )
    extra = Path(out) / "published"
    extra.mkdir(exist_ok=True)
    if report.kept:
        kept = {k: state[k].detach().contiguous().clone() for k in report.kept}
        save_file(kept, str(extra / "unmapped.safetensors"), metadata={"format": "pt"})
    (extra / "import_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    verify_import(out, state, report)
    return report
    if report.settings.get("frame_branch"):
        config = json.loads((out / "emollm_config.json").read_text())
        if "frame" not in config["modalities"]:
            raise ValueError(f"{out}: the import records a frame branch, but emollm_config.json has none")
        lost = [k for k in state if k.split(".")[0] in FRAME_PROJECTORS and k not in report.mapped]
        if lost:
            raise ValueError(f"{lost}: the frame branch is on, but these EVA projector tensors were not mapped")
