"""Core benchmark: train-step time, share of placeholder expansion + merge, batched vs sequential generation.

Run: ``make bench`` (all benchmarks) or ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_core.py [--quick]``.
Each row compares within one run (ratios), so numbers from a busy machine still compare fairly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from emollm.backbones import (
    get_backbone,  # noqa: E402
    get_chat_format,  # noqa: E402
)
from emollm.data.synthetic import SyntheticEmotionData  # noqa: E402
from emollm.model.factory import build_model, emotion_llama_modalities  # noqa: E402
from emollm.model.generation import chat  # noqa: E402
from emollm.model.lora import LoraSettings, TrainableSpec, apply_lora, set_trainable  # noqa: E402
from emollm.testing import build_tiny_tokenizer  # noqa: E402


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def build(kind: str):
    mods = emotion_llama_modalities()
    if kind == "tiny":
        tok = build_tiny_tokenizer(get_chat_format("chatml"))
        cfg = get_backbone("smollm2").text_config(n_layers=2, hidden=64, vocab_size=len(tok))
        return build_model("smollm2", mods, text_config=cfg, tokenizer=tok)
    return build_model("smollm2", mods)


def bench_train(kind: str, batch_size: int, repeats: int) -> dict:
    model, proc = build(kind)
    apply_lora(model, LoraSettings(r=8, alpha=16, dropout=0.0), ("q_proj", "v_proj"))
    set_trainable(model, TrainableSpec(llm="lora"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    data = SyntheticEmotionData({m: c.feature_dim for m, c in model.config.modalities.items()})
    samples, _ = data.split(batch_size, split_seed=1)
    batch = proc(samples)

    def step():
        loss = model(**batch.model_inputs()).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    def expand_and_merge():
        b = proc(samples)  # chat format + placeholder expansion + tokenisation + padding
        with torch.no_grad():
            model.embed(b.input_ids, b.modality_inputs)  # projection + masked_scatter

    step()  # warm-up
    t_step = _median_time(step, repeats)
    t_glue = _median_time(expand_and_merge, repeats)
    tokens = int(batch.attention_mask.sum())
    return {
        "model": kind,
        "batch": batch_size,
        "seq_len": batch.input_ids.shape[1],
        "step_s": t_step,
        "tokens_per_s": tokens / t_step,
        "expand_merge_s": t_glue,
        "expand_merge_share": t_glue / (t_step + t_glue),
    }


def bench_generate(kind: str, batch_size: int, new_tokens: int) -> dict:
    model, proc = build(kind)
    model.eval()
    data = SyntheticEmotionData({m: c.feature_dim for m, c in model.config.modalities.items()})
    samples, _ = data.split(batch_size, split_seed=3, with_answer=False)
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}  # fixed length: fair tokens/s
    chat(model, proc, samples[:1], **kwargs)  # warm-up
    t = time.perf_counter()
    chat(model, proc, samples, batch_size=batch_size, **kwargs)
    batched = time.perf_counter() - t
    t = time.perf_counter()
    for s in samples:
        chat(model, proc, [s], **kwargs)
    sequential = time.perf_counter() - t
    total = batch_size * new_tokens
    return {
        "model": kind,
        "batch": batch_size,
        "new_tokens": new_tokens,
        "batched_tok_s": total / batched,
        "sequential_tok_s": total / sequential,
        "speedup": sequential / batched,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only, fewer repeats")
    parser.add_argument("--json", type=Path, default=Path("bench/out/core.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    kinds = ["tiny"] if args.quick else ["tiny", "smollm2"]
    train_rows = [bench_train(k, 4, 3 if args.quick else 5) for k in kinds]
    gen_rows = [bench_generate(k, 8, 16) for k in kinds]
    print("\nTrain step (LoRA q/v r=8 + linear projectors, 3 spliced feature tokens per sample, batch 4)")
    print(f"{'model':<8} {'seq':>4} {'step s':>8} {'tok/s':>8} {'expand+merge s':>15} {'share':>7}")
    for r in train_rows:
        print(
            f"{r['model']:<8} {r['seq_len']:>4} {r['step_s']:>8.3f} {r['tokens_per_s']:>8.0f} "
            f"{r['expand_merge_s']:>15.4f} {r['expand_merge_share']:>6.1%}"
        )
    print("\nGeneration, 8 prompts x 16 new tokens (greedy)")
    print(f"{'model':<8} {'batched tok/s':>14} {'sequential tok/s':>17} {'speedup':>8}")
    for r in gen_rows:
        print(f"{r['model']:<8} {r['batched_tok_s']:>14.1f} {r['sequential_tok_s']:>17.1f} {r['speedup']:>7.2f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "threads": torch.get_num_threads(),
        "command": "python bench/bench_core.py" + (" --quick" if args.quick else ""),
    }
    args.json.write_text(json.dumps({"meta": meta, "train": train_rows, "generate": gen_rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
