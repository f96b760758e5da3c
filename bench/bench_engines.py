"""Text generation engines side by side, in one run, on the same SmolLM2-135M GGUF weights and the same prompts.

Run: ``make bench`` or ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_engines.py [--quick]``. llama.cpp rows need
``make install-engines``; without it they say so and the transformers rows still run.

1. Decode tokens/s and time to first token (TTFT), one thread each, the same ChatML prompt (rendered and tokenised by
   emollm, fed as token ids to both) and the same number of new tokens (greedy, end tokens ignored), best of a few
   runs: emollm's in-process path (transformers, fp32 weights dequantised from the GGUF, bf16-packed linears under
   bf16 autocast: what ``precision: auto`` gives on this CPU) and llama.cpp (llama-cpp-python) on the GGUF itself
   (``Q4_1``). Each against its bandwidth floor: memory read bandwidth (``bench_speed.read_bandwidth``) / the weight
   bytes one decode step reads (2 bytes a parameter for packed bf16; the GGUF's tensor bytes for llama.cpp, the tied
   embedding read once as the output layer).
2. MERR reasoning clips/min: the real stage (``emollm_merr.stages.run_reasoning``, a fresh cache each row) on
   ``--clips`` synthetic clue sets, MERR's default budget of 160 new tokens, greedy: transformers in process,
   llama.cpp in process (the CPU default when installed), and llama-cpp-python's OpenAI-compatible server on loopback
   (one thread, ``repeat_penalty`` 1.0 so it decodes greedily like the others) at 1 and 4 concurrent requests.
   Generated tokens are counted too: engines that stop at different places do different work.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from bench_speed import read_bandwidth, table  # noqa: E402

from emollm.backbones.loading import embedded_gguf  # noqa: E402
from emollm.engines.llamacpp import llama_cpp_version  # noqa: E402
from emollm.engines.local import TransformersEngine  # noqa: E402

PROMPT = [
    {"role": "system", "content": "You are an emotion analysis expert."},
    {
        "role": "user",
        "content": "Visual expression: lip corner puller, cheek raiser. Audio tone: high pitch, fast speech. "
        'Subtitle: "I passed the exam, I cannot believe it!" Explain why the person feels happy.',
    },
]


def gguf_sizes(path: Path) -> tuple[int, int]:
    """(parameters, bytes) of the GGUF's tensors: the bytes are what one decode step reads (every weight once)."""
    from gguf import GGUFReader

    tensors = GGUFReader(str(path)).tensors
    return sum(int(t.n_elements) for t in tensors), sum(int(t.n_bytes) for t in tensors)


class _Clock:
    """A transformers streamer that stamps each generated token (the first ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self._prompt = True

    def put(self, value) -> None:
        if self._prompt:
            self._prompt = False
            return
        self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass


def ours_once(engine: TransformersEngine, ids: list[int], new: int) -> tuple[float, float]:
    """(TTFT s, decode tok/s) of one greedy run of exactly ``new`` tokens."""
    from emollm.model.precision import autocast

    model, tokenizer, _, _ = engine._load()
    x = torch.tensor([ids])
    clock = _Clock()
    t0 = time.perf_counter()
    with torch.no_grad(), autocast(engine.precision, "cpu"):
        model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=new, min_new_tokens=new, do_sample=False,
            temperature=None, top_p=None, top_k=None, streamer=clock, pad_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
    s = clock.stamps
    return s[0] - t0, (len(s) - 1) / (s[-1] - s[0])


def llamacpp_once(llm, ids: list[int], new: int) -> tuple[float, float]:
    llm.reset()
    stamps = []
    t0 = time.perf_counter()
    for token in llm.generate(ids, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        stamps.append(time.perf_counter())
        if len(stamps) >= new:
            break
        del token
    return stamps[0] - t0, (len(stamps) - 1) / (stamps[-1] - stamps[0])


def best(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return min(r[0] for r in runs), max(r[1] for r in runs)


def clue_sets(n: int) -> tuple[list[str], dict, dict]:
    faces = [
        "lip corner puller, cheek raiser",
        "brow lowerer, lip tightener",
        "inner brow raiser, lip corner depressor",
    ]
    tones = ["high pitch, fast speech", "loud, tense voice", "low pitch, slow speech"]
    labels = ["happy", "angry", "sad"]
    names = [f"clip_{i:03d}" for i in range(n)]
    texts = {
        x: {"visual_expression": faces[i % 3], "audio": tones[i % 3], "subtitle": f"This is sentence number {i}."}
        for i, x in enumerate(names)
    }
    return names, texts, {x: labels[i % 3] for i, x in enumerate(names)}


def merr_row(client, names, texts, labels) -> tuple[float, int, float]:
    """(clips/min, generated tokens, seconds) of the MERR reasoning stage with ``client``, fresh cache."""
    from emollm.utils.stage_cache import StageStats
    from emollm_merr.stages import run_reasoning

    errors: list = []
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        out = run_reasoning(
            names, texts, labels, client=client, cache_dir=Path(tmp), prompt_version="v1", seed=0,
            stats=StageStats(), on_error=lambda n, e: errors.append((n, e)),
        )  # fmt: skip
        sec = time.perf_counter() - t
    if errors:
        raise RuntimeError(f"reasoning failed: {errors[:2]}")
    tok = _tokenizer()
    generated = sum(len(tok(v, add_special_tokens=False).input_ids) for v in out.values())
    return len(names) / sec * 60, generated, sec


_TOK = None


def _tokenizer():
    global _TOK
    if _TOK is None:
        from emollm.backbones import get_backbone
        from emollm.backbones.loading import load_tokenizer, resolve_llm_path

        _TOK = load_tokenizer(resolve_llm_path(get_backbone("smollm2"), None))
    return _TOK


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (about 3 minutes)")
    parser.add_argument("--clips", type=int, default=None, help="MERR reasoning clips per row (default 8, quick 4)")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    reps, new = (2, 32) if args.quick else (3, 64)
    clips = args.clips or (4 if args.quick else 8)
    t_all = time.perf_counter()
    gguf = embedded_gguf("smollm2")
    version = llama_cpp_version()

    bw = read_bandwidth(256 if args.quick else 512, reps)
    ours = TransformersEngine("smollm2", precision="auto", max_new_tokens=160)
    ours._load()
    n, q_bytes = gguf_sizes(gguf)  # the same weights: transformers holds them dequantised, llama.cpp as stored
    ids = ours.prompt_ids(PROMPT)
    print(
        f"machine: memory read {bw / 1e9:.1f} GB/s, {threads} thread(s), load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores; SmolLM2-135M ({n / 1e6:.1f}M params)"
    )
    print(
        f"prompt: {len(ids)} tokens (ChatML, emollm's tokenizer, fed as ids to both); {new} new tokens, "
        f"best of {reps}\n"
    )

    rows = []
    floor16 = bw / (n * 2)
    ttft, rate = best([ours_once(ours, ids, new) for _ in range(reps)])
    kernels = ours.linear_kernels or ""
    rows.append([f"emollm in-process ({ours.precision}, {kernels.split(' (')[0]})", f"{rate:.1f}", f"{ttft:.3f}",
                 f"{floor16:.1f}", f"{rate / floor16:.0%}"])  # fmt: skip
    llm = None
    if version is None:
        rows.append(["llama.cpp: not installed (make install-engines)", "-", "-", "-", "-"])
    else:
        from llama_cpp import Llama

        llm = Llama(str(gguf), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
        floor_q = bw / q_bytes
        ttft, rate = best([llamacpp_once(llm, ids, new) for _ in range(reps)])
        rows.append([f"llama.cpp {version} (GGUF Q4_1)", f"{rate:.1f}", f"{ttft:.3f}", f"{floor_q:.1f}",
                     f"{rate / floor_q:.0%}"])  # fmt: skip
        del llm
    print(table(["engine (same weights)", "decode tok/s", "TTFT s", "floor tok/s", "of floor"], rows))

    names, texts, labels = clue_sets(clips)
    merr = []

    def add(name: str, client) -> None:
        per_min, generated, sec = merr_row(client, names, texts, labels)
        merr.append([name, f"{per_min:.1f}", str(generated), f"{generated / sec:.1f}", f"{sec:.1f}"])

    add(f"transformers in process ({ours.precision})", ours)
    if version is not None:
        from emollm.engines import EndpointEngine
        from emollm.engines.llamacpp import LlamaCppEngine, LlamaCppServer

        local = LlamaCppEngine("smollm2", max_new_tokens=160, threads=threads)
        local._load()
        add("llama.cpp in process", local)
        with LlamaCppServer(gguf, alias="smollm2", threads=threads) as url:
            for conc in (1, 4):
                server = EndpointEngine(
                    url, "smollm2", max_new_tokens=160, concurrency=conc, extra_body={"repeat_penalty": 1.0},
                    timeout=600,
                )  # fmt: skip
                add(f"llama-cpp-python server, {conc} concurrent", server)
                server.close()
    else:
        merr.append(["llama.cpp rows: not installed (make install-engines)", "-", "-", "-", "-"])
    print(f"\nMERR reasoning stage, {clips} clips, up to 160 new tokens each, greedy (fresh cache per row)\n")
    print(table(["engine", "clips/min", "tokens", "tok/s", "seconds"], merr))
    print(
        "\nfloor: memory bandwidth / weight bytes per decode step. TTFT includes the prompt's prefill. The server runs "
        "one llama.cpp context: concurrent requests queue behind each other (a 2-core machine has no room for more)."
    )
    load = os.getloadavg()
    print(f"total {time.perf_counter() - t_all:.0f} s; load average at the end {load[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
