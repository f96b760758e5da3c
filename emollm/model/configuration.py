"""``EmoLLMConfig``: the complete, serialisable description of a multimodal model.

It is a plain dataclass rather than a ``PreTrainedConfig`` subclass on purpose: unknown keys (a typo in a YAML or a
checkpoint from another version) are errors that name the key and the allowed ones, instead of being silently
stored as attributes. The language model's own config travels inside as ``text_config`` (the dict of any
transformers config); ``hf_text_config()`` rebuilds the real transformers object.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Modality = Literal["audio", "face", "video", "frame", "multi"]
MODALITIES: tuple[str, ...] = ("audio", "face", "video", "frame", "multi")
"""The model's modalities, in canonical order (type-embedding rows, feature order). ``frame`` is one image of the
clip for a global visual encoder (Emotion-LLaMA's EVA ViT-g branch); ``video`` is the clip's frames over time;
``multi`` is a fused slot whose tokens are computed from other modalities' encoder features before the LLM
(AffectGPT's ``<Multi>`` token; :class:`PreFusionConfig`). New modalities are appended, so the type-embedding rows
of older checkpoints keep their order."""
FUSED_MODALITIES: tuple[str, ...] = ("multi",)
"""Slots that have no input of their own: ``ModalityConfig.fuse`` names the modalities they are computed from."""
MARKERS: dict[str, str] = {m: f"<{m}>" for m in MODALITIES}
"""The text marker that refers to each modality in a user turn (``<audio>``, ``<face>``, ``<video>``, ``<frame>``,
``<multi>``)."""
MARKER_RE = re.compile(r"<(" + "|".join(MODALITIES) + r")(?::(\d+):(\d*))?>")
"""Matches any marker; group 1 is the modality. A marker may carry a token span, ``<frame:0:256>`` ...
``<frame:256:>`` (groups 2 and 3; an empty end means "to the last token"): the string form of a content part's
``"span"`` (``emollm.model.processing``)."""

#: Emotion-LLaMA's released feature folders (REFERENCE.md §1.6): utterance-level 1024-d .npy per sample.
EMOTION_LLAMA_FEATURE_DIRS: dict[str, str] = {"face": "mae_340_UTT", "video": "maeV_399_UTT", "audio": "HL-UTT"}


def _from_dict(cls, data: dict[str, Any], where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed keys: {sorted(names)}")
    return cls(**data)


@dataclass
class ProjectorConfig:
    """How one modality's features become LLM tokens (see ``emollm.model.projectors``)."""

    kind: str = "linear"
    """``identity``, ``linear``, ``mlp2x_gelu``, ``attn_pool``, ``affectgpt_attn_pool`` (AffectGPT's attention pooling
    over time: sum_t (w . h_t + b) h_t, no softmax, then a linear; one token), ``qformer`` or ``emotion_llama_frame``
    (a global frame encoder's [CLS, patches]: ``merge`` patches per token through one linear, CLS through another;
    output [patch tokens..., CLS], as Emotion-LLaMA's ``llama_proj`` / ``cls_tk_llama_proj``)."""
    num_queries: int = 1
    """Output tokens of ``attn_pool`` / ``qformer``."""
    num_layers: int = 2
    """``qformer`` blocks."""
    num_heads: int = 8
    hidden_dim: int | None = None
    merge: int = 1
    """``linear``/``mlp2x_gelu``/``emotion_llama_frame``: concatenate this many adjacent frames (patches) first
    (MiniGPT-v2 uses 4)."""
    dropout: float = 0.0


PRE_FUSION_KINDS: tuple[str, ...] = ("attention",)
"""``PreFusionConfig.kind`` values (``emollm.model.projectors.PreFusion``)."""


@dataclass
class PreFusionConfig:
    """How a fused slot (``multi``) is computed from other modalities' encoder features, before the LLM.

    ``attention`` is AffectGPT's ``multi_fusion_type: attention``: each source's encoder features are averaged over
    their valid time steps, mapped to the slot's ``feature_dim`` by its own linear, the mapped vectors are
    concatenated (in ``sources`` order) and ``Linear(n * W -> W)`` then ``Linear(W -> n)`` (no activation, no
    softmax) give one weight per source; the weighted sum of the mapped vectors goes through the slot's projector.
    """

    sources: list[str] = field(default_factory=lambda: ["video", "audio"])
    """The modalities whose encoder outputs are fused, in concatenation order (AffectGPT: video or face, then audio).
    Their own slots may be used or not: the fused token only needs their features."""
    kind: str = "attention"
    """One of ``PRE_FUSION_KINDS``."""


@dataclass
class ModalityConfig:
    """One modality branch: encoder -> projector -> placeholder tokens; or, with ``fuse``, a fused slot:
    other branches' encoder outputs -> pre-fusion -> projector -> placeholder tokens."""

    encoder: str = "precomputed"
    """Encoder registry name (``emollm.encoders.list_encoders()``); ``precomputed`` reads cached features."""
    feature_dim: int = 1024
    """Width of the encoder output (1024 for Emotion-LLaMA's FaceMAE/VideoMAE/HuBERT-large features). Live encoders
    check it against their real output width."""
    encoder_path: str | None = None
    """Local weights of a live encoder (folder or file); never downloaded."""
    encoder_options: dict[str, Any] = field(default_factory=dict)
    """Encoder-specific settings (layer selection, pooling, ...), passed to its builder."""
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    feature_dir: str | None = None
    """For ``precomputed``: the sub-folder of the feature root holding ``<name>.npy`` files."""
    media: dict[str, Any] = field(default_factory=dict)
    """``emollm.media.load_sample`` settings a live encoder needs on a raw clip (``frame_policy``, ``face_size``,
    ...), over the encoder entry's own (``emollm analyze`` uses them); recorded so a checkpoint states its
    preprocessing."""
    fuse: PreFusionConfig | None = None
    """Set only on a fused slot (``multi``): the modalities it is computed from. Its ``feature_dim`` is then the
    common width the sources are mapped to (AffectGPT: the widest source, 1024) and its ``encoder`` is ``fused``."""
    placeholder: str = ""
    """Placeholder token string (set from the backbone's policy)."""
    token_id: int = -1
    """Its id in the tokenizer (set when the tokenizer is prepared)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "modality") -> ModalityConfig:
        data = dict(data)
        if isinstance(data.get("projector"), dict):
            data["projector"] = _from_dict(ProjectorConfig, data["projector"], f"{where}.projector")
        if isinstance(data.get("fuse"), dict):
            data["fuse"] = _from_dict(PreFusionConfig, data["fuse"], f"{where}.fuse")
        return _from_dict(cls, data, where)


@dataclass
class FusionConfig:
    """Cross-modal fusion block between projected token sequences (``emollm.model.projectors.CrossModalFusion``)."""

    pairs: list[tuple[str, str]] = field(default_factory=lambda: [("audio", "video"), ("audio", "face")])
    depth: int = 1
    fusion_dim: int = 256
    num_heads: int = 4


@dataclass
class EmoLLMConfig:
    """A multimodal emotion LLM: backbone + text config + modality branches."""

    backbone: str
    """Registry name (``emollm backbones``)."""
    text_config: dict[str, Any]
    """The language model's transformers config as a dict (``model_type`` included)."""
    modalities: dict[str, ModalityConfig] = field(default_factory=dict)
    modality_type_embeddings: bool = True
    """Add a learned, zero-initialised per-modality embedding to every modality token."""
    fusion: FusionConfig | None = None
    chat_format: str = ""
    default_system: str | None = None
    llm_source: str | None = None
    """Where the base LLM weights came from: a local path, ``embedded:<name>``, or None (random init, saved inside
    the checkpoint)."""
    version: int = 1

    def __post_init__(self) -> None:
        from emollm.backbones import get_backbone

        spec = get_backbone(self.backbone)
        self.chat_format = self.chat_format or spec.chat_format
        if self.default_system is None:
            self.default_system = spec.default_system
        if self.text_config.get("model_type") != spec.family:
            raise ValueError(
                f"text_config.model_type is {self.text_config.get('model_type')!r} but backbone {self.backbone!r} "
                f"is a {spec.family!r} model"
            )
        for name, mod in list(self.modalities.items()):
            if name not in MODALITIES:
                raise ValueError(f"modalities: unknown modality {name!r}; allowed: {list(MODALITIES)}")
            if isinstance(mod, dict):
                mod = self.modalities[name] = ModalityConfig.from_dict(mod, f"modalities.{name}")
            if check_fused_slot(name, mod, self.modalities, f"modalities.{name}"):
                continue
            from emollm.encoders import list_encoders

            if mod.encoder not in list_encoders():
                raise ValueError(
                    f"modalities.{name}.encoder: unknown encoder {mod.encoder!r}; known: {', '.join(list_encoders())}"
                )
            if mod.feature_dim < 1:
                raise ValueError(f"modalities.{name}.feature_dim must be >= 1, got {mod.feature_dim}")
        if isinstance(self.fusion, dict):
            self.fusion = _from_dict(FusionConfig, self.fusion, "fusion")
        if self.fusion is not None:
            self.fusion.pairs = [tuple(p) for p in self.fusion.pairs]
            for a, b in self.fusion.pairs:
                for m in (a, b):
                    if m not in self.modalities:
                        raise ValueError(f"fusion.pairs names modality {m!r}, which is not configured")

    @property
    def hidden_size(self) -> int:
        return int(self.text_config["hidden_size"])

    def hf_text_config(self):
        """The transformers config object of the language model."""
        from transformers import AutoConfig

        cfg = dict(self.text_config)
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg)

    def fused_sources(self) -> dict[str, list[str]]:
        """Fused slot -> the modalities it is computed from (empty without a fused slot)."""
        return {m: list(c.fuse.sources) for m, c in self.modalities.items() if c.fuse is not None}

    def token_ids(self) -> dict[str, int]:
        return {m: c.token_id for m, c in self.modalities.items()}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmoLLMConfig:
        return _from_dict(cls, data, "EmoLLMConfig")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> EmoLLMConfig:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e}); the checkpoint is damaged") from None
        return cls.from_dict(data)


def check_fused_slot(name: str, mod: Any, modalities: dict[str, Any], where: str) -> bool:
    """Validate the fused-slot settings of one branch (``mod`` has ``fuse``, ``encoder``, ``feature_dim``); return
    whether it is a fused slot. Sets ``encoder`` to ``fused`` on one. Raises ``ValueError`` naming the key."""
    fuse = mod.fuse
    if isinstance(fuse, dict):
        fuse = mod.fuse = _from_dict(PreFusionConfig, fuse, f"{where}.fuse")
    if fuse is None:
        if name in FUSED_MODALITIES:
            raise ValueError(
                f"{where}: the {name!r} slot is computed from other modalities; give {where}.fuse.sources, e.g. "
                "fuse: {sources: [video, audio]}"
            )
        if mod.encoder == "fused":
            raise ValueError(f"{where}.encoder: 'fused' is only for a fused slot ({', '.join(FUSED_MODALITIES)})")
        return False
    if name not in FUSED_MODALITIES:
        raise ValueError(
            f"{where}.fuse: only a fused slot ({', '.join(FUSED_MODALITIES)}) is computed from other modalities; "
            f"{name!r} has an input of its own"
        )
    if mod.encoder not in ("precomputed", "fused"):
        raise ValueError(f"{where}.encoder: a fused slot has no encoder of its own (got {mod.encoder!r}); leave it out")
    mod.encoder = "fused"
    if fuse.kind not in PRE_FUSION_KINDS:
        raise ValueError(f"{where}.fuse.kind: unknown kind {fuse.kind!r}; known: {', '.join(PRE_FUSION_KINDS)}")
    sources = list(fuse.sources)
    if len(sources) < 2 or len(set(sources)) != len(sources):
        raise ValueError(f"{where}.fuse.sources: give two or more different modalities, got {sources}")
    for src in sources:
        other = modalities.get(src)
        if other is None:
            raise ValueError(f"{where}.fuse.sources names {src!r}, which is not a configured modality")
        if src in FUSED_MODALITIES:
            raise ValueError(f"{where}.fuse.sources: {src!r} is itself a fused slot")
    fuse.sources = sources
    if mod.feature_dim < 1:
        raise ValueError(f"{where}.feature_dim must be >= 1, got {mod.feature_dim}")
    return True


def text_config_dict(hf_config) -> dict[str, Any]:
    """A transformers config -> the plain dict stored in ``EmoLLMConfig.text_config``."""
    data = hf_config.to_dict()
    for key in ("_name_or_path", "_model_name_or_path", "transformers_version", "quantization_config", "architectures"):
        data.pop(key, None)
    return data
