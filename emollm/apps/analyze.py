"""``emollm analyze``: a raw video, audio file, face image or text file in; label probabilities, evidence and a
reasoning out. The Python API is :func:`analyze` (one file) and :func:`load_analyzer` (a reusable analyzer).

Two modes, and every result says which (``mode``, ``produced_by``):

- **clue mode** (no ``--checkpoint``): zero-shot from real clue models that ship offline
  (:class:`emollm.apps.clue_mode.ClueAnalyzer`: expression CNN, AUs from blendshapes, MERR's AU table, Whisper,
  Praat, transcript emotion, late fusion, a checked rationale from the embedded LLM);
- **checkpoint mode**: a trained emollm checkpoint's answer likelihoods and generation, below.

In checkpoint mode, for every modality branch of the checkpoint the features are computed from the clip itself:
- a live tower (``whisper``, ``fer``, ``clip``, ...) gets the decoded media directly;
- a ``precomputed`` branch trained on an ``emollm features`` cache records the encoder and media settings that
  made the cache (``encoder_options.extracted_with``), so the same encoder runs live with the same settings;
- a ``precomputed`` branch with no such record needs the feature file (``--audio F.npy`` ...), or stays missing.
A modality the clip does not have (no face, no audio track) is reported as missing and spends no tokens.
Probabilities come from the answers' likelihoods (``emollm.model.likelihood``), the reasoning from greedy generation.
A subtitle longer than ``max_text_chars`` is cut before it reaches the prompt (``notes`` says so); under a
:func:`emollm.utils.deadline.deadline` (the service's ``--timeout-s``) the stages check it and generation stops at it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from emollm.apps.analysis import MAX_TEXT_CHARS, Analysis, bound_text
from emollm.labels import MER2023_LABELS, LabelParser
from emollm.model.configuration import MODALITIES
from emollm.model.modeling import EmoLLMForCausalLM
from emollm.model.processing import EmoProcessor, Sample
from emollm.model.prompts import EMOTION_INSTRUCTION as EMOTION_PROMPT
from emollm.model.prompts import REASON_INSTRUCTION as REASON_PROMPT
from emollm.utils.deadline import check_deadline, stopping_criteria


def clip_features(
    model: EmoLLMForCausalLM, path: str | Path, feature_files: dict[str, str] | None = None
) -> tuple[dict[str, torch.Tensor | None], dict[str, str]]:
    """Per-modality inputs for the model's branches from a clip, and the reasons for missing ones."""
    from emollm.encoders import ENCODERS, load_feature_file
    from emollm.jobs.features import build_live_encoder, encode_sample, sample_has, spec_from_manifest
    from emollm.media import load_sample

    feature_files = feature_files or {}
    features: dict[str, torch.Tensor | None] = {}
    missing: dict[str, str] = {}
    for modality, cfg in model.config.modalities.items():
        if cfg.fuse is not None:  # a fused slot (multi) is computed from its sources' features by the model
            continue
        if modality in feature_files:
            features[modality] = load_feature_file(feature_files[modality], cfg.feature_dim)
            continue
        manifest = cfg.encoder_options.get("extracted_with") if cfg.encoder == "precomputed" else None
        if cfg.encoder == "precomputed" and manifest is None:
            features[modality] = None
            missing[modality] = (
                f"the checkpoint's {modality} branch reads precomputed features and does not record their encoder; "
                f"pass --{modality} FILE.npy"
            )
            continue
        entry = ENCODERS.get(manifest["encoder"] if manifest else cfg.encoder)
        source = entry.input if entry is not None and entry.input != "features" else modality
        if manifest:
            media_kwargs = spec_from_manifest(manifest).media_kwargs()
        else:  # the encoder entry's media settings, then the branch's own (an import records its preprocessing)
            media_kwargs = {**(entry.media if entry else {}), **cfg.media}
        media = load_sample(path, modalities=[source], **media_kwargs)
        if not sample_has(source, media):
            features[modality] = None
            missing[modality] = media.missing.get(source, f"{path}: no {source}")
            continue
        if manifest:  # recompute the cached features live, with the settings that made the cache
            encoder = build_live_encoder(spec_from_manifest(manifest))
            features[modality] = torch.from_numpy(encode_sample(encoder, source, media))
        else:  # a live tower takes the raw media
            raw = {"audio": media.audio, "face": media.faces, "video": media.frames}[source]
            features[modality] = torch.from_numpy(raw)
    return features, missing


def analyze_checkpoint(
    model: EmoLLMForCausalLM,
    processor: EmoProcessor,
    path: str | Path,
    *,
    labels: tuple[str, ...] | list[str] = MER2023_LABELS,
    subtitle: str | None = None,
    answer_template: str = "The emotion is {label}.",
    feature_files: dict[str, str] | None = None,
    max_new_tokens: int = 128,
    precision: str = "fp32",
    max_text_chars: int = MAX_TEXT_CHARS,
) -> Analysis:
    """Analyse one clip with a loaded checkpoint: label probabilities over ``labels`` (from the answers'
    likelihoods) and a generated reasoning (a subtitle longer than ``max_text_chars`` is cut, with a note)."""
    from emollm.media import probe
    from emollm.model.generation import chat
    from emollm.model.likelihood import label_probabilities
    from emollm.model.precision import autocast

    subtitle, note = bound_text(subtitle, max_text_chars, "subtitle")
    notes = [note] if note else []
    check_deadline("media")
    probe(path)  # the clip must exist and be readable even when every branch reads precomputed feature files
    features, missing = clip_features(model, path, feature_files)
    check_deadline("likelihoods")
    used = [m for m, f in features.items() if f is not None]
    if not used and not subtitle:
        reason = "no modality gave evidence (no face, no audio, no transcript): the model would answer from the prompt"
        return Analysis(
            file=str(path), label=None, probabilities={}, reasoning="", modalities=[],
            missing={**missing, "label": reason}, subtitle=None, mode="checkpoint", reasoning_source="none",
            notes=notes,
        )  # fmt: skip
    markers = "".join(f"<{m}>" for m in model.config.modalities)
    says = f" The person in video says: {subtitle}." if subtitle else ""
    question = f"{markers}{says} {EMOTION_PROMPT.format(labels=', '.join(labels))}"
    sample = Sample(messages=[{"role": "user", "content": question}], features=features, name=Path(path).stem)
    reason = Sample(messages=[{"role": "user", "content": f"{markers}{says} {REASON_PROMPT}"}], features=features)
    with autocast(precision):  # the LLM only: media decoding and face detection stay fp32
        probs = label_probabilities(model, processor, sample, labels, answer_template=answer_template)
        check_deadline("reasoning")
        criteria = stopping_criteria()  # generation stops at the deadline
        extra = {} if criteria is None else {"stopping_criteria": criteria}
        reasoning = chat(model, processor, [reason], max_new_tokens=max_new_tokens, **extra)[0]
        check_deadline("reasoning")
    label = max(probs, key=probs.get)
    source = "checkpoint"
    others = [lab for lab in LabelParser(labels).parse(reasoning).candidates if lab != label]
    if others:  # said, not hidden: the generated text and the likelihoods disagree
        source = f"checkpoint (the text names {', '.join(others)}; the likelihoods favour {label})"
    return Analysis(
        file=str(path),
        label=label,
        probabilities=probs,
        reasoning=reasoning,
        modalities=[m for m, f in features.items() if f is not None]
        + [m for m, srcs in model.config.fused_sources().items() if all(features.get(x) is not None for x in srcs)],
        missing=missing,
        subtitle=subtitle,
        mode="checkpoint",
        reasoning_source=source,
        notes=notes,
    )


class CheckpointAnalyzer:
    """A loaded checkpoint behind the same call as :class:`~emollm.apps.clue_mode.ClueAnalyzer`.

    Args:
        checkpoint: The checkpoint folder.
        labels: The label set, in prompt order.
        llm_path: Base LLM folder/GGUF if the checkpoint cannot find it.
        asr: Transcribe speech with the embedded Whisper when no subtitle is given.
        precision: ``auto``, ``fp32`` or ``bf16`` (:mod:`emollm.model.precision`).
        answer_template: The trained answer format.
        max_new_tokens: Reasoning length budget.
        feature_files: Modality -> precomputed ``.npy`` to use instead of the clip.
        max_text_chars: Longest subtitle or transcript put in the prompt; longer ones are cut (with a note).
    """

    def __init__(
        self,
        checkpoint: str | Path,
        labels: Sequence[str] = MER2023_LABELS,
        *,
        llm_path: str | None = None,
        asr: bool = False,
        precision: str = "auto",
        answer_template: str = "The emotion is {label}.",
        max_new_tokens: int = 128,
        feature_files: dict[str, str] | None = None,
        max_text_chars: int = MAX_TEXT_CHARS,
    ) -> None:
        from emollm.checkpoints import load_model

        if isinstance(max_text_chars, bool) or not isinstance(max_text_chars, int) or max_text_chars < 1:
            raise ValueError(f"max_text_chars: must be a positive whole number, got {max_text_chars!r}")
        from emollm.model.precision import resolve_precision

        self.checkpoint = str(checkpoint)
        self.labels = tuple(labels)
        self.precision = resolve_precision(precision)
        self.model, self.processor = load_model(checkpoint, llm_path=llm_path)
        from emollm.model.packed_linear import pack_linears

        self.linear_kernels = pack_linears(self.model.language_model, self.precision)
        self.asr, self.answer_template, self.max_new_tokens = asr, answer_template, max_new_tokens
        self.feature_files = dict(feature_files or {})
        self.max_text_chars = max_text_chars
        self._whisper: Any = None

    def __call__(self, path: str | Path, *, subtitle: str | None = None, timeline: Any = None) -> Analysis:
        """Analyse one clip (see :func:`analyze_checkpoint`); with a :class:`~emollm.apps.timeline.TimelineSettings`,
        also score its windows (:func:`emollm.apps.timeline.checkpoint_timeline`)."""
        start = time.perf_counter()
        given = subtitle
        if timeline is not None:
            from emollm.apps.timeline import check_checkpoint_timeline

            check_checkpoint_timeline(self)  # refused before any work
        if subtitle is None and self.asr:
            from emollm.encoders.text import WhisperTranscriber
            from emollm.media import load_sample

            media = load_sample(path, modalities=["audio"])
            if media.audio is not None:
                self._whisper = self._whisper or WhisperTranscriber()
                subtitle = self._whisper(media.audio) or None
        result = analyze_checkpoint(
            self.model, self.processor, path, labels=self.labels, subtitle=subtitle,
            answer_template=self.answer_template, feature_files=self.feature_files,
            max_new_tokens=self.max_new_tokens, precision=self.precision, max_text_chars=self.max_text_chars,
        )  # fmt: skip
        if timeline is not None:
            from emollm.apps.timeline import checkpoint_timeline

            result.timeline = checkpoint_timeline(self, path, timeline, subtitle=given)
        result.timings = {"total": round(time.perf_counter() - start, 4)}
        result.produced_by = self.produced_by()
        return result

    def produced_by(self) -> dict[str, Any]:
        """Mode, checkpoint, backbone, encoders and precision behind the results."""
        cfg = self.model.config
        return {
            "mode": "checkpoint",
            "checkpoint": self.checkpoint,
            "labels": list(self.labels),
            "models": {
                "backbone": getattr(cfg, "backbone", None),
                "encoders": {m: c.encoder for m, c in cfg.modalities.items()},
                "asr": "whisper-tiny.en (embedded)" if self.asr else None,
            },
            "precision": self.precision,
            "linear_kernels": self.linear_kernels,
            "max_text_chars": self.max_text_chars,
        }

    def close(self) -> None:
        """Nothing to release (kept for symmetry with the clue analyzer)."""


def load_analyzer(checkpoint: str | Path | None = None, labels: Sequence[str] | None = None, **options: Any) -> Any:
    """An analyzer to call on many files: clue mode without ``checkpoint``, else checkpoint mode.

    Args:
        checkpoint: A checkpoint folder, or None for the zero-shot clue mode.
        labels: The label set in prompt order (default: MER2023's six).
        **options: Clue mode: fields of :class:`~emollm.apps.clue_mode.ClueSettings`; checkpoint mode: the keyword
            arguments of :class:`CheckpointAnalyzer`.

    Returns:
        ``analyzer(path, subtitle=None) -> Analysis``, with ``produced_by()`` and ``close()``.
    """
    labels = tuple(labels or MER2023_LABELS)
    if checkpoint is None:
        from emollm.apps.clue_mode import ClueAnalyzer, ClueSettings

        return ClueAnalyzer(labels, ClueSettings(**options))
    return CheckpointAnalyzer(checkpoint, labels, **options)


def analyze(
    path: str | Path,
    *,
    checkpoint: str | Path | None = None,
    labels: Sequence[str] | None = None,
    subtitle: str | None = None,
    timeline: Any = None,
    **options: Any,
) -> Analysis:
    """Analyse one video, audio file, face image or ``.txt`` file.

    Example:
        >>> import emollm                                                   # doctest: +SKIP
        >>> result = emollm.analyze("clip.mp4")                             # doctest: +SKIP
        >>> result.label, result.probabilities["happy"], result.mode        # doctest: +SKIP
        ('happy', 0.61, 'clues')

    Args:
        path: The media file.
        checkpoint: A trained checkpoint folder; None runs the zero-shot clue mode.
        labels: The label set in prompt order (default: MER2023's six).
        subtitle: A known transcript (else speech is transcribed).
        timeline: A :class:`~emollm.apps.timeline.TimelineSettings` (or True for 3 s windows, 1 s hop): also give
            one entry per window in ``result.timeline``.
        **options: See :func:`load_analyzer`.

    Raises:
        emollm.media.MediaError: The file cannot be used (the message names it and the fix).
        ValueError: A bad option or checkpoint folder.
    """
    analyzer = load_analyzer(checkpoint, labels, **options)
    try:
        if timeline is True:
            from emollm.apps.timeline import TimelineSettings

            timeline = TimelineSettings()
        return analyzer(path, subtitle=subtitle, **({} if timeline in (None, False) else {"timeline": timeline}))
    finally:
        analyzer.close()


def _parse_labels(text: str) -> list[str]:
    labels = [lab.strip() for lab in text.split(",") if lab.strip()]
    if len(labels) < 2:
        raise ValueError(f"--labels needs at least two labels, got {text!r}")
    return labels


def main(argv: list[str]) -> int:
    """``emollm analyze``."""
    parser = argparse.ArgumentParser(prog="emollm analyze", description=__doc__.split("\n\n")[0])
    parser.add_argument("media", nargs="?", help="a video, audio, image or .txt file, or a folder of them (batch)")
    parser.add_argument("--list", metavar="FILE", help="batch: a file with one media path per line")
    parser.add_argument(
        "--out", metavar="JSONL", help="batch: results file (resumed if it is one; any other existing file is refused)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="batch: start --out over, replacing what is there (never an input)"
    )
    parser.add_argument("--checkpoint", help="a trained checkpoint folder; without it: the zero-shot clue mode")
    parser.add_argument("--labels", default=",".join(MER2023_LABELS), help="comma-separated label set, in prompt order")
    parser.add_argument("--subtitle", help="what the person says (else it is transcribed)")
    parser.add_argument(
        "--max-text-chars", type=int, default=MAX_TEXT_CHARS,
        help="longest subtitle, transcript or text file given to the models; longer ones are cut (noted in the output)",
    )  # fmt: skip
    parser.add_argument("--no-asr", action="store_true", help="do not transcribe speech")
    parser.add_argument("--asr", action="store_true", help=argparse.SUPPRESS)  # the old checkpoint-mode flag
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--llm-path", help="LLM folder/GGUF (checkpoint base, or the clue-mode reasoning backbone)")
    clue = parser.add_argument_group("clue mode")
    clue.add_argument("--frames", type=int, default=12, help="frames sampled for the face branch")
    clue.add_argument("--face-detector", default="auto", choices=["auto", "mtcnn", "haar"])
    clue.add_argument("--text-model", default="minilm", choices=["minilm", "nade"])
    clue.add_argument("--reasoning", default="llm", choices=["llm", "template"])
    clue.add_argument("--fusion-config", metavar="YAML", help="fusion weights (default: emollm/clues/fusion.yaml)")
    from emollm.engines import add_engine_arguments, engine_options

    add_engine_arguments(parser, concurrency=1)  # the rationale's LLM (clue mode)
    ckpt = parser.add_argument_group("checkpoint mode")
    ckpt.add_argument("--answer-template", default="The emotion is {label}.", help="the trained answer format")
    for m in MODALITIES:
        ckpt.add_argument(f"--{m}", metavar="FILE", help=f"precomputed {m} features (.npy) instead of the clip")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    windows = parser.add_argument_group("timeline (one file)")
    windows.add_argument("--timeline", action="store_true", help="also one entry per window (label, evidence, words)")
    windows.add_argument("--window", type=float, default=3.0, help="window length in seconds")
    windows.add_argument("--hop", type=float, default=1.0, help="seconds between window ends")
    windows.add_argument("--timeline-fps", type=float, default=3.0, help="face frames analysed per second")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    from emollm.jobs.batch import BatchError, check_results_file, collect_inputs, run_batch
    from emollm.media import MediaError

    try:
        labels = _parse_labels(args.labels)
        if args.checkpoint is None:
            options: dict[str, Any] = dict(
                frames=args.frames, face_detector=args.face_detector, asr=not args.no_asr,
                text_model=args.text_model, reasoning=args.reasoning, llm_path=args.llm_path,
                precision=args.precision, fusion_config=args.fusion_config, max_text_chars=args.max_text_chars,
                engine=args.llm_engine, llm_endpoint=args.llm_endpoint, llm_model=args.llm_model,
                llm_api_key_env=args.llm_api_key_env, llm_timeout=args.llm_timeout,
                llm_extra=engine_options(args)["extra_body"],
            )  # fmt: skip
            if args.llm_endpoint and not args.llm_model:
                raise ValueError(f"--llm-endpoint {args.llm_endpoint} needs the served model's name (--llm-model NAME)")
            if args.max_new_tokens is not None:
                options["max_new_tokens"] = args.max_new_tokens
        else:
            if args.llm_endpoint:
                raise ValueError(
                    "--llm-endpoint serves the clue mode's rationale; a checkpoint generates in this process (to "
                    "serve it on vLLM: emollm export CHECKPOINT OUT --vllm)"
                )
            files = {m: getattr(args, m) for m in MODALITIES if getattr(args, m)}
            options = dict(
                llm_path=args.llm_path, asr=not args.no_asr, precision=args.precision,
                answer_template=args.answer_template, max_new_tokens=args.max_new_tokens or 128, feature_files=files,
                max_text_chars=args.max_text_chars,
            )  # fmt: skip
        inputs = collect_inputs(args.media, args.list)
        batch = args.list is not None or (args.media is not None and Path(args.media).is_dir())
        if batch and not args.out:
            raise ValueError("a folder or --list is a batch: give --out RESULTS.jsonl (re-running resumes it)")
        timeline = None
        if args.timeline:
            from emollm.apps.timeline import TimelineSettings

            timeline = TimelineSettings(args.window, args.hop, args.timeline_fps)
            if batch:
                raise ValueError("--timeline is for one file (analyze each file of a batch on its own)")
        if not batch and args.out:
            raise ValueError("--out is for batches (a folder or --list); for one file use --json > FILE")
        if batch:  # before the models load: a refused --out costs nothing
            check_results_file(args.out, inputs, list_file=args.list, overwrite=args.overwrite)
        analyzer = load_analyzer(args.checkpoint, labels, **options)
    except (OSError, ValueError, ImportError, BatchError, MediaError) as e:
        if args.debug:
            raise
        print(f"emollm analyze: {e}", file=sys.stderr)
        return 2
    try:
        if batch:
            if args.overwrite:  # start over: the old results (and their errors file) go
                out = Path(args.out)
                for old in (out, out.with_name(out.stem + ".errors.jsonl")):
                    old.unlink(missing_ok=True)
            return run_batch(analyzer, inputs, Path(args.out), subtitle=args.subtitle, debug=args.debug)
        from emollm.engines import EngineError

        try:
            result = analyzer(inputs[0], subtitle=args.subtitle, **({} if timeline is None else {"timeline": timeline}))
        except (OSError, ValueError, ImportError, MediaError, EngineError) as e:
            if args.debug:
                raise
            print(f"emollm analyze: {e}", file=sys.stderr)
            return 2
    finally:
        analyzer.close()
    print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) if args.json else result.report())
    return 0
