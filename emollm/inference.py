"""``emollm analyze CLIP --checkpoint DIR``: a raw video (or audio/image) in, emotion probabilities and reasoning out.

For every modality branch of the checkpoint the features are computed from the clip itself:
- a live tower (``whisper``, ``fer``, ``clip``, ...) gets the decoded media directly;
- a ``precomputed`` branch trained on an ``emollm features`` cache records the encoder and media settings that
  made the cache (``encoder_options.extracted_with``), so the same encoder runs live with the same settings;
- a ``precomputed`` branch with no such record needs the feature file (``--audio F.npy`` ...), or stays missing.
A modality the clip does not have (no face, no audio track) is reported as missing and spends no tokens.
Probabilities come from the answers' likelihoods (``emollm.scoring``), the reasoning from greedy generation.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from emollm.labels import MER2023_LABELS
from emollm.modeling import EmoLLMForCausalLM
from emollm.processing import EmoProcessor, Sample
from emollm.prompts import EMOTION_INSTRUCTION as EMOTION_PROMPT
from emollm.prompts import REASON_INSTRUCTION as REASON_PROMPT


@dataclass
class Analysis:
    """What ``analyze`` found for one clip."""

    file: str
    label: str
    probabilities: dict[str, float]
    reasoning: str
    modalities: list[str]
    missing: dict[str, str] = field(default_factory=dict)
    subtitle: str | None = None


def clip_features(
    model: EmoLLMForCausalLM, path: str | Path, feature_files: dict[str, str] | None = None
) -> tuple[dict[str, torch.Tensor | None], dict[str, str]]:
    """Per-modality inputs for the model's branches from a clip, and the reasons for missing ones."""
    from emollm.encoders import ENCODERS, load_feature_file
    from emollm.features import build_live_encoder, encode_sample, sample_has, spec_from_manifest
    from emollm.media import load_sample

    feature_files = feature_files or {}
    features: dict[str, torch.Tensor | None] = {}
    missing: dict[str, str] = {}
    for modality, cfg in model.config.modalities.items():
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
        media_kwargs = spec_from_manifest(manifest).media_kwargs() if manifest else {}
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


def analyze(
    model: EmoLLMForCausalLM,
    processor: EmoProcessor,
    path: str | Path,
    *,
    labels: tuple[str, ...] | list[str] = MER2023_LABELS,
    subtitle: str | None = None,
    answer_template: str = "The emotion is {label}.",
    feature_files: dict[str, str] | None = None,
    max_new_tokens: int = 128,
) -> Analysis:
    """Analyse one clip: label probabilities over ``labels`` and a written reasoning."""
    from emollm.generation import chat
    from emollm.scoring import label_probabilities

    features, missing = clip_features(model, path, feature_files)
    markers = "".join(f"<{m}>" for m in model.config.modalities)
    says = f" The person in video says: {subtitle}." if subtitle else ""
    question = f"{markers}{says} {EMOTION_PROMPT.format(labels=', '.join(labels))}"
    sample = Sample(messages=[{"role": "user", "content": question}], features=features, name=Path(path).stem)
    probs = label_probabilities(model, processor, sample, labels, answer_template=answer_template)
    reason = Sample(messages=[{"role": "user", "content": f"{markers}{says} {REASON_PROMPT}"}], features=features)
    reasoning = chat(model, processor, [reason], max_new_tokens=max_new_tokens)[0]
    return Analysis(
        file=str(path),
        label=max(probs, key=probs.get),
        probabilities=probs,
        reasoning=reasoning,
        modalities=[m for m, f in features.items() if f is not None],
        missing=missing,
        subtitle=subtitle,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="emollm analyze", description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", help="video, audio or image file")
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (emollm train / save_checkpoint)")
    parser.add_argument("--labels", default=",".join(MER2023_LABELS), help="comma-separated label set, in prompt order")
    parser.add_argument("--subtitle", help="what the person says (else --asr, else none)")
    parser.add_argument("--asr", action="store_true", help="transcribe the speech with the embedded Whisper tiny.en")
    parser.add_argument("--answer-template", default="The emotion is {label}.", help="the trained answer format")
    parser.add_argument("--llm-path", help="base LLM folder/GGUF if the checkpoint cannot find it")
    for m in ("audio", "face", "video"):
        parser.add_argument(f"--{m}", metavar="FILE", help=f"precomputed {m} features (.npy) instead of the clip")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from emollm.checkpoint import load_model
    from emollm.media import MediaError

    labels = [lab.strip() for lab in args.labels.split(",") if lab.strip()]
    if len(labels) < 2:
        print("emollm analyze: --labels needs at least two labels", file=sys.stderr)
        return 2
    try:
        model, processor = load_model(args.checkpoint, llm_path=args.llm_path)
        subtitle = args.subtitle
        if subtitle is None and args.asr:
            from emollm.encoders.text import WhisperTranscriber
            from emollm.media import load_sample

            media = load_sample(args.clip, modalities=["audio"])
            subtitle = WhisperTranscriber()(media.audio) if media.audio is not None else None
        files = {m: getattr(args, m) for m in ("audio", "face", "video") if getattr(args, m)}
        result = analyze(
            model,
            processor,
            args.clip,
            labels=labels,
            subtitle=subtitle,
            answer_template=args.answer_template,
            feature_files=files,
            max_new_tokens=args.max_new_tokens,
        )
    except (OSError, ValueError, MediaError) as e:
        print(f"emollm analyze: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(result), indent=2))
        return 0
    print(f"{result.file}: {result.label}")
    for label, p in sorted(result.probabilities.items(), key=lambda kv: -kv[1]):
        print(f"  {label:<10} {p:.3f}")
    print(f"modalities used: {', '.join(result.modalities) or 'none'}")
    for m, reason in result.missing.items():
        print(f"  missing {m}: {reason}")
    print(f"reasoning: {result.reasoning}")
    return 0
