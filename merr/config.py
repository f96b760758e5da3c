"""Typed configuration of ``emollm merr build`` (``configs/merr/build.yaml``).

The schema is the dataclasses below (each field: type, default, attribute docstring). Loading is strict: an unknown
key raises :class:`BuildConfigError` naming the dotted key, the closest match and the allowed keys; a value of the
wrong type names the key, the expected type and the value. ``key.sub=value`` overrides (values parsed as YAML) are
applied before validation, e.g. ``emollm merr build --config configs/merr/build.yaml reason.max_new_tokens=64``.

Relative paths are resolved against the current directory (run the command from the repository root, as the YAML
header says), except ``au.cues: default``, which is the packaged ``emollm/aus/au_cues.yaml``.

Describer specs (one per clue; see :mod:`emollm_merr.describe`):

==================== =====================================================================================
``describe.visual``  ``none`` (default: left empty and marked), ``checkpoint:<dir>`` (an emollm checkpoint with a
                     live video/face encoder), ``vlm:<path>`` (a local transformers image-text-to-text model),
                     ``python:<module>:<factory>`` (your own :class:`~emollm_merr.describe.Describer`)
``describe.audio``   ``measured`` (default: pitch / energy / speaking rate from the waveform), ``none``,
                     ``checkpoint:<dir>`` (live audio encoder), ``alm:<path>`` (a local audio LLM, e.g.
                     Qwen2-Audio), ``python:<module>:<factory>``
``inputs.subtitles`` a ``name,sentence`` CSV path, ``asr`` (offline Whisper tiny.en), ``asr:<whisper dir>``,
                     ``none``, ``python:<module>:<factory>``
==================== =====================================================================================
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from emollm.data.merr_schema import LABELS
from emollm.utils import typed_config

__all__ = [
    "AUConfig",
    "BuildConfig",
    "BuildConfigError",
    "DescribeConfig",
    "FilterConfig",
    "InputsConfig",
    "OutputConfig",
    "ReasonConfig",
    "ReviewConfig",
    "apply_overrides",
    "load_build_config",
]


class BuildConfigError(ValueError):
    """A bad ``emollm merr build`` configuration (the message names the dotted key)."""


@dataclass
class InputsConfig:
    """What to build from."""

    video_dir: str = ""
    """Folder of ``<name>.mp4`` / ``<name>.avi`` clips (``.mp4`` wins when both exist). Required."""
    openface_dir: str | None = None
    """Folder of OpenFace 2 ``<name>.csv`` files (``FeatureExtraction -aus``); null: no AU source (see
    ``au.fallback``). A clip without its CSV also falls back."""
    subtitles: str = "none"
    """``name,sentence`` CSV (``transcription_en_all.csv``), ``asr``, ``asr:<whisper folder>``, ``none`` or
    ``python:<module>:<factory>``."""
    names: str | None = None
    """Optional list of names to build: one per line, or an ``N C E V`` list (first column)."""
    limit: int | None = None
    """Build only the first N names (sorted), for a quick look."""


@dataclass
class AUConfig:
    """Stage 1-3: action units, peak frame, pseudo-label."""

    cues: str = "default"
    """AU cue table YAML; ``default`` is the packaged ``emollm/aus/au_cues.yaml``."""
    peak_rule: Literal["paper", "sum_all"] | None = None
    """Peak rule; null: the cue table's ``peak.rule``."""
    min_confidence: float | None = None
    """OpenFace frames below this confidence are ignored; null: the cue table's ``openface.min_confidence``."""
    run_openface: bool = False
    """Clips without a CSV: run OpenFace 2 ``FeatureExtraction -aus`` first (``openface_bin``, else
    ``$OPENFACE_BIN``, else on PATH), writing ``<output.dir>/openface/<name>.csv``."""
    openface_bin: str | None = None
    """The FeatureExtraction binary for ``run_openface``."""
    fallback: Literal["blendshapes", "fer", "none"] = "fer"
    """No OpenFace CSV for a clip: ``blendshapes`` estimates AUs offline from MediaPipe blendshapes on the main
    face (``au_source: blendshapes``; needs ``emollm[clues]``), then the same peak rule and AU table as OpenFace;
    ``fer`` uses the FER2013 expression model's per-frame probabilities (``au_source: fer``); ``none`` logs the clip
    as an error."""
    fer_frames: str = "uniform:16"
    """Frames scored by the FER and blendshapes fallbacks (an ``emollm.media.sample_frame_indices`` policy)."""
    face_detector: Literal["auto", "mtcnn", "haar"] = "auto"
    """Face detector of the fallbacks (and of face-input checkpoint describers)."""


@dataclass
class DescribeConfig:
    """Stage 4: clues. A clue that cannot be measured or described is left empty and marked, never invented."""

    visual: str = "none"
    """Visual objective description: ``none``, ``checkpoint:<dir>``, ``vlm:<path>``, ``python:<module>:<factory>``."""
    audio: str = "measured"
    """Audio tone: ``measured``, ``none``, ``checkpoint:<dir>``, ``alm:<path>``, ``python:<module>:<factory>``."""
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Keyword arguments of ``python:<module>:<factory>`` describers, per clue (``visual`` / ``audio`` /
    ``subtitle``)."""
    max_new_tokens: int = 64
    """Generation budget of model describers (checkpoint / vlm / alm)."""
    device: str = "cpu"
    """Torch device of model describers."""


@dataclass
class ReasonConfig:
    """Stage 5: fine-grained reasoning by a text LLM (REFERENCE.md §1.5 step 7)."""

    enabled: bool = True
    """False: stop after the coarse captions (no ``MERR_fine_grained.*``)."""
    backbone: str = "smollm2"
    """Backbone registry name (``emollm backbones``); ``smollm2`` runs offline on embedded weights."""
    llm_path: str | None = None
    """Local weights (HF folder or ``.gguf``) for backbones without embedded weights."""
    engine: Literal["auto", "transformers", "llama.cpp"] = "auto"
    """In-process engine (:mod:`emollm.engines.select`): ``auto`` = llama.cpp on a CPU when it is installed
    (``make install-engines``) and the weights are a GGUF (the embedded SmolLM2), else transformers. Part of the
    client id, so each engine's reasonings are cached apart."""
    endpoint: str | None = None
    """An OpenAI-compatible server (``http://HOST:PORT/v1``; ``--llm-endpoint``) instead of an in-process engine."""
    model: str | None = None
    """The served model's name (``--llm-model``; required with ``endpoint``)."""
    api_key_env: str = "EMOLLM_LLM_API_KEY"
    """Environment variable holding the server's API key (unset: no key is sent)."""
    concurrency: int = 4
    """Server: requests in flight at most."""
    timeout: float = 120.0
    """Server: seconds per request attempt."""
    retries: int = 3
    """Server: extra attempts after a transient failure (connection, timeout, HTTP 408/429/5xx), with backoff."""
    extra_body: dict[str, Any] = field(default_factory=dict)
    """Server: extra request fields, e.g. ``{repeat_penalty: 1.0}`` for llama.cpp's server (its default is 1.1)."""
    client: str | None = None
    """``python:<module>:<factory>``: your own :class:`~emollm_merr.reason.ReasoningClient` instead of ``backbone``."""
    client_options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the ``client`` factory."""
    max_new_tokens: int = 160
    """Generation budget per sample (a reasoning cut by it is trimmed to its last full sentence)."""
    do_sample: bool = False
    """False: greedy. True: sampling seeded per prompt from ``seed`` (still deterministic)."""
    temperature: float = 0.7
    top_p: float = 0.9
    prompt_version: str = "v1"
    """Prompt template version (:data:`emollm.model.prompts.REASONING_PROMPTS`); part of the cache key."""
    device: str = "cpu"
    """Torch device of the reasoning LLM."""
    precision: Literal["auto", "fp32", "bf16", "no"] = "auto"
    """Reasoning LLM autocast: ``bf16`` over its weights, ``fp32`` / ``no`` for none; ``auto`` = bf16 on a device
    with native bf16 (a CPU with AVX512-BF16 or AMX: SmolLM2 prefill 2.8x, decode 1.4x faster) when the weights are
    float32, else fp32. A bf16 client's id ends in ``:bf16``, so its reasonings are cached apart from fp32 ones
    (``manifest.json`` ``stages.reason.client``)."""

    def resolved_precision(self) -> str:
        """``bf16`` (autocast) or ``fp32`` (none) for the backbone's weights on ``device``; a ``client`` decides
        its own precision (this value is then unused).

        Raises:
            ValueError: ``bf16`` over a backbone loaded in float16, or an unknown backbone.
        """
        from emollm.backbones import get_backbone
        from emollm.model.precision import resolve_precision

        return resolve_precision(self.precision, self.device, weights=get_backbone(self.backbone).default_dtype)


@dataclass
class FilterConfig:
    """Stage 5 filters (fine-grained set) and the neutral augmentation."""

    labels: list[str] = field(default_factory=lambda: list(LABELS))
    """Label vocabulary; pseudo-labels outside it (e.g. ``disgust``, which MERR excludes) are dropped."""
    contradiction: bool = True
    """Drop reasonings that do not name the label (or a synonym) or conclude another label."""
    degenerate: bool = True
    """Drop reasonings that loop (an 8-word run repeated 3+ times) or stop mid-sentence."""
    dedup: bool = True
    """Drop reasonings whose normalised text duplicates an earlier sample's (name order)."""
    max_per_class: int | None = None
    """Class balancing: keep at most this many fine-grained samples per label (seeded choice); null: no cap."""
    add_neutral: bool = False
    """Add neutral samples from clips where no AU combination fired (the paper adds neutral for balance)."""
    neutral_count: int | None = None
    """Neutral samples to add; null: the mean size of the labelled emotion classes."""
    neutral_max_active_aus: int = 0
    """A clip is a neutral candidate only when at most this many AUs are active at its peak."""


@dataclass
class ReviewConfig:
    """Stage 6: human-in-the-loop refinement."""

    corrections: str | None = None
    """Imported corrections (JSON written by ``emollm merr review import``); null: ``<output.dir>/review/
    corrections.json``. Corrected labels override pseudo-labels on every (re)build."""
    export_limit: int = 100
    """Rows of ``review export``: every flagged sample, then the least confident, up to this many."""


@dataclass
class OutputConfig:
    """Where and what to write."""

    dir: str = "runs/merr"
    """Output folder: exports, ``cache/``, ``errors.jsonl``, ``summary.json``, ``review/``."""
    valence: float = -10.0
    """V column of the ``N C E V`` lists: Emotion-LLaMA's placeholder -10 (no valence is measured here)."""
    include_extras: bool = False
    """Add our fields (au_source, clue status, confidence, ...) under ``"emollm"`` in the MERR JSON files. Off:
    exactly Emotion-LLaMA's keys."""


@dataclass
class BuildConfig:
    """``emollm merr build`` settings."""

    inputs: InputsConfig = field(default_factory=InputsConfig)
    au: AUConfig = field(default_factory=AUConfig)
    describe: DescribeConfig = field(default_factory=DescribeConfig)
    reason: ReasonConfig = field(default_factory=ReasonConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    seed: int = 0
    """Seed of every random choice (neutral selection, class balancing, sampled reasoning)."""
    workers: int = 1
    """Threads for per-clip media work (decoding, measuring). Model stages run one clip at a time."""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> BuildConfig:
        """Build from a nested dict; raises :class:`BuildConfigError` naming the first bad key."""
        cfg = typed_config.convert(cls, data or {}, "", error=BuildConfigError)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-ready)."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Cross-field checks; raises :class:`BuildConfigError`."""
        from emollm.model.prompts import REASONING_PROMPTS as PROMPTS
        from emollm_merr.describe import parse_spec

        if not self.inputs.video_dir:
            raise BuildConfigError("inputs.video_dir: required (the folder of <name>.mp4/.avi clips)")
        if self.workers < 1:
            raise BuildConfigError(f"workers: must be >= 1, got {self.workers}")
        if self.inputs.limit is not None and self.inputs.limit < 1:
            raise BuildConfigError(f"inputs.limit: must be >= 1 or null, got {self.inputs.limit}")
        for key, value in (
            ("reason.max_new_tokens", self.reason.max_new_tokens),
            ("describe.max_new_tokens", self.describe.max_new_tokens),
            ("review.export_limit", self.review.export_limit),
        ):
            if value < 1:
                raise BuildConfigError(f"{key}: must be >= 1, got {value}")
        if self.reason.prompt_version not in PROMPTS:
            raise BuildConfigError(
                f"reason.prompt_version: unknown version {self.reason.prompt_version!r}; known: {', '.join(PROMPTS)}"
            )
        if self.reason.client is not None and not self.reason.client.startswith("python:"):
            raise BuildConfigError(f"reason.client: expected 'python:<module>:<factory>', got {self.reason.client!r}")
        if self.reason.client is None and self.reason.enabled and self.reason.precision == "bf16":
            from emollm.backbones import get_backbone

            try:
                weights = get_backbone(self.reason.backbone).default_dtype
            except ValueError:  # an unknown backbone is reported, with the known ones, when the client is built
                weights = None
            if weights == "float16":
                raise BuildConfigError(
                    f"reason.precision: bf16 autocast over {self.reason.backbone}'s float16 weights rounds them to "
                    "bf16; use auto or fp32"
                )
        if not self.filter.labels or len(set(self.filter.labels)) != len(self.filter.labels):
            raise BuildConfigError(
                f"filter.labels: must be a non-empty list without duplicates, got {self.filter.labels}"
            )
        if self.filter.add_neutral and "neutral" not in self.filter.labels:
            raise BuildConfigError("filter.add_neutral: true needs 'neutral' in filter.labels")
        for key, value in (
            ("filter.max_per_class", self.filter.max_per_class),
            ("filter.neutral_count", self.filter.neutral_count),
        ):
            if value is not None and value < 0:
                raise BuildConfigError(f"{key}: must be >= 0 or null, got {value}")
        unknown = sorted(set(self.describe.options) - {"visual", "audio", "subtitle"})
        if unknown:
            raise BuildConfigError(f"describe.options: unknown clue(s) {unknown}; allowed: visual, audio, subtitle")
        for key, clue, value in (
            ("describe.visual", "visual", self.describe.visual),
            ("describe.audio", "audio", self.describe.audio),
            ("inputs.subtitles", "subtitle", self.inputs.subtitles),
        ):
            try:
                parse_spec(clue, value)
            except ValueError as e:
                raise BuildConfigError(f"{key}: {e}") from None
        from emollm.media import sample_frame_indices

        try:
            sample_frame_indices(16, self.au.fer_frames, fps=10.0)
        except ValueError as e:
            raise BuildConfigError(f"au.fer_frames: {e}") from None

    # ----------------------------------------------------------------------------------------- resolved paths
    @property
    def output_dir(self) -> Path:
        """The output folder."""
        return Path(self.output.dir)

    @property
    def corrections_path(self) -> Path:
        """Where imported review corrections live."""
        return (
            Path(self.review.corrections)
            if self.review.corrections
            else self.output_dir / "review" / "corrections.json"
        )

    def cues_path(self) -> Path | None:
        """The cue table file (None: the packaged default)."""
        return None if self.au.cues in ("", "default") else Path(self.au.cues)


# ============================================================================================ YAML + overrides


def apply_overrides(data: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML: ``null``, ``true``, ``[a, b]``) to a raw dict."""
    return typed_config.apply_overrides(data, overrides, error=BuildConfigError, example="filter.dedup=false")


def load_build_config(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> BuildConfig:
    """Read ``configs/merr/build.yaml`` (or start from the defaults when ``path`` is None) and apply overrides.

    Raises:
        FileNotFoundError: no such file.
        BuildConfigError: bad YAML, unknown key, wrong type or a failed cross-field check.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = typed_config.load_yaml_mapping(path, error=BuildConfigError)
    return BuildConfig.from_dict(apply_overrides(data, overrides))
