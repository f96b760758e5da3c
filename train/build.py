"""Model set-up for the recipe: build from the run config, then restore weights from a checkpoint.

Every run builds its model the same way (``build_run_model``); ``build_for_run`` then takes weights from a
checkpoint folder with the library's one restore API (``emollm.checkpoints.restore.restore_into``):

- ``base``: the full LLM weights a checkpoint stores in ``llm/`` (random-init debug model, full fine-tune),
  loaded before LoRA is applied;
- ``adapter``: ``adapter_model.safetensors`` into the freshly applied LoRA (same r / targets required);
- ``connectors``: ``projectors.safetensors`` (projectors, type embeddings, fusion; strict for a resume,
  lenient for ``init_from`` so that stage 2 may add a modality).

So a resume and a stage-2 start are the same code path as a fresh run, plus explicit, checked loads.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from emollm.backbones import get_backbone
from emollm.model.configuration import ModalityConfig, PreFusionConfig, ProjectorConfig
from emollm.runconfig import RunConfig
from emollm.settings import TrainableSpec

log = logging.getLogger("emollm.train")

#: What to do when ``init_from`` / a resume checkpoint belongs to another backbone.
_BACKBONE_HINT = "Train a stage-1 checkpoint for this backbone (configs/pretrain/)"


def resolve_dtype(name: str, backbone: str) -> torch.dtype:
    """``auto`` -> the backbone's dtype on a GPU, float32 on CPU."""
    if name == "auto":
        return getattr(torch, get_backbone(backbone).default_dtype) if torch.cuda.is_available() else torch.float32
    return getattr(torch, name)


def modality_configs(cfg: RunConfig) -> dict[str, ModalityConfig]:
    """The model's modality branches from the run config's ``model.modalities``."""
    out = {}
    for name, m in cfg.model.modalities.items():
        options = dict(m.encoder_options)
        if m.encoder == "precomputed" and m.feature_dir and cfg.data.feature_root and "extracted_with" not in options:
            # Features from an `emollm features` cache: remember how they were made, so `emollm analyze` can
            # recompute them live from a raw clip with the same encoder and media settings.
            manifest = Path(cfg.data.feature_root) / m.feature_dir / "manifest.json"
            if manifest.is_file():
                options["extracted_with"] = json.loads(manifest.read_text())
        out[name] = ModalityConfig(
            encoder=m.encoder,
            feature_dim=m.feature_dim,
            encoder_path=m.encoder_path,
            encoder_options=options,
            projector=ProjectorConfig(**vars(m.projector)),
            feature_dir=m.feature_dir,
            media=dict(m.media),
            fuse=None if m.fuse is None else PreFusionConfig(**vars(m.fuse)),
        )
    return out


def tiny_tokenizer(backbone: str, vocab_size: int):
    """The tiny BPE tokenizer of a backbone's chat format (with LLaMA-3's reserved placeholder tokens)."""
    from emollm.backbones import get_chat_format
    from emollm.testing import build_tiny_tokenizer

    spec = get_backbone(backbone)
    extras: list[str] = []
    if spec.placeholder_token_policy == "reserved":
        extras += list(spec.placeholder_tokens().values())
    extras += [t for t in spec.pad_candidates if t.startswith("<|")]
    return build_tiny_tokenizer(get_chat_format(spec.chat_format), extra_special_tokens=extras, vocab_size=vocab_size)


def build_run_model(cfg: RunConfig):
    """``(model, processor)`` as the config says: a tiny random LLM, or real weights (optionally 4/8-bit)."""
    from emollm.model.factory import build_model

    m = cfg.model
    mods = modality_configs(cfg)
    if m.tiny is not None:
        spec = get_backbone(m.backbone)
        tok = tiny_tokenizer(m.backbone, m.tiny.vocab_size)
        text_config = spec.text_config(
            n_layers=m.tiny.n_layers, hidden=m.tiny.hidden, vocab_size=len(tok), initializer_range=m.tiny.init_std
        )
        return build_model(
            m.backbone,
            mods,
            text_config=text_config,
            tokenizer=tok,
            modality_type_embeddings=m.modality_type_embeddings,
        )
    return build_model(
        m.backbone,
        mods,
        llm_path=m.llm_path,
        dtype=resolve_dtype(m.dtype, m.backbone),
        quantization=m.quantization,
        modality_type_embeddings=m.modality_type_embeddings,
    )


@dataclass
class RunModel:
    """The model of a run, before accelerate wraps it.

    Attributes:
        model: The ``EmoLLMForCausalLM`` (LoRA applied when the run trains it, weights restored).
        processor: Its ``EmoProcessor``.
        trainable: What the run trains.
        init_report: What ``init_from`` provided (for the setup log record); empty otherwise.
    """

    model: Any
    processor: Any
    trainable: TrainableSpec
    init_report: dict[str, Any] = field(default_factory=dict)


def build_for_run(cfg: RunConfig, resume_dir: Path | None = None) -> RunModel:
    """Build the run's model, take weights from the resumed checkpoint or ``train.init_from``, apply LoRA.

    A resume restores everything strictly (the adapter must exist exactly when the run trains LoRA); ``init_from``
    restores what fits: the adapter only with ``train.init_adapter`` on a LoRA run, connectors leniently so that a
    later stage may add a modality.

    Args:
        cfg: The resolved run config.
        resume_dir: The checkpoint to resume from, or None.

    Returns:
        The :class:`RunModel`.
    """
    from emollm.checkpoints import read_checkpoint
    from emollm.checkpoints.restore import restore_into
    from emollm.model.lora import apply_lora
    from emollm_train.stages import lora_settings, trainable_spec

    t = cfg.train
    model, processor = build_run_model(cfg)
    run = RunModel(model, processor, trainable_spec(t))
    lora = run.trainable.llm == "lora"
    source = resume_dir or (Path(t.init_from) if t.init_from else None)
    info = None
    if source is not None:
        what = "resume checkpoint" if resume_dir else "init_from"
        info = read_checkpoint(source)
        info.check_fits(model, what=what, hint=_BACKBONE_HINT)
        if info.has_base:
            restore_into(model, info, parts=("base",), what=what, hint=_BACKBONE_HINT)
    if lora:
        apply_lora(model, lora_settings(t), get_backbone(cfg.model.backbone).lora_targets)
    if info is None:
        return run
    if resume_dir is not None:
        if info.has_adapter != lora:
            raise ValueError(
                f"resume checkpoint {source} {'has' if info.has_adapter else 'has no'} LoRA adapter, "
                f"but this run's trainable.llm is {run.trainable.llm!r}"
            )
        parts = ("adapter", "connectors") if info.has_adapter else ("connectors",)
        restore_into(model, info, parts=parts, strict=True, what="resume checkpoint", hint=_BACKBONE_HINT)
        return run
    use_adapter = info.has_adapter and t.init_adapter and lora
    if info.has_adapter and not lora:
        log.warning("init_from %s has a LoRA adapter, but this run trains no LoRA: it is not used", source)
    parts = ("adapter", "connectors") if use_adapter else ("connectors",)
    report = restore_into(model, info, parts=parts, strict=False, what="init_from", hint=_BACKBONE_HINT)
    if use_adapter:
        run.init_report["adapter"] = True
    run.init_report.update(
        init_from=str(source), projectors_loaded=len(report.loaded), projectors_missing=report.missing
    )
    if report.missing:
        log.warning(
            "init_from %s lacks %d connector tensors (new modalities?), e.g. %s; they start from scratch",
            source,
            len(report.missing),
            report.missing[:3],
        )
    return run
