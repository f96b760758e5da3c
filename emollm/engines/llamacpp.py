"""In-process generation with llama.cpp (through llama-cpp-python) on a GGUF file: the embedded SmolLM2
``Q4_1`` GGUF, or a ``.gguf`` given as ``llm_path``.

The prompt is rendered and tokenised by emollm (the backbone's chat format and the tokenizer transformers builds
from the same GGUF), and the token ids are fed to llama.cpp, so both in-process engines see identical prompts; the
answer is decoded by the same tokenizer. Greedy decoding is llama.cpp's greedy sampler with no repeat penalty;
sampling is seeded per prompt. ``pip install 'emollm[engines]'`` (``make install-engines``) builds llama-cpp-python
from source (about 8 minutes on one core).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from emollm.engines.base import Completion, EngineBase, Messages, Sampling, conversation_seed
from emollm.utils.deadline import check_deadline

__all__ = ["LlamaCppEngine", "LlamaCppServer", "f32_gguf", "gguf_of", "llama_cpp_version"]


def llama_cpp_version() -> str | None:
    """The installed llama-cpp-python version, or None when it is not installed (nothing is imported)."""
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return None


def gguf_of(backbone: str, llm_path: str | os.PathLike[str] | None) -> Path | None:
    """The GGUF file llama.cpp would run for ``backbone``: the embedded one, ``llm_path`` when it is a ``.gguf``,
    else None (an HF folder has no GGUF)."""
    from emollm.backbones import get_backbone
    from emollm.backbones.loading import embedded_gguf

    spec = get_backbone(backbone)
    if llm_path is None:
        return embedded_gguf(spec.embedded) if spec.embedded else None
    path = Path(llm_path).expanduser()
    return path if path.suffix == ".gguf" else None


class LlamaCppEngine(EngineBase):
    """A registry backbone's GGUF run by llama.cpp in this process (loaded on first use; one prompt at a time).

    Args:
        backbone: Registry name (``smollm2`` runs on its embedded GGUF).
        llm_path: A ``.gguf`` file (backbones without embedded weights).
        max_new_tokens: Generation budget.
        do_sample: False: greedy. True: ``temperature``/``top_p``, seeded per prompt.
        temperature: Sampling temperature.
        top_p: Nucleus mass.
        threads: llama.cpp threads (default: ``OMP_NUM_THREADS``, else every core).
        n_ctx: Context length of the llama.cpp session.
        gguf: Run this GGUF instead (same model, other tensor types, e.g. :func:`f32_gguf`); the tokenizer stays the
            backbone's.

    Raises:
        ImportError: llama-cpp-python is not installed (the message names the install command).
        ValueError: ``llm_path`` is not a ``.gguf`` file.
    """

    kind = "llama.cpp"

    def __init__(
        self,
        backbone: str = "smollm2",
        llm_path: str | os.PathLike[str] | None = None,
        *,
        max_new_tokens: int = 160,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.9,
        threads: int | None = None,
        n_ctx: int = 4096,
        gguf: str | os.PathLike[str] | None = None,
    ):
        from emollm.backbones import get_backbone

        self.version = llama_cpp_version()
        if self.version is None:
            raise ImportError(
                "llama.cpp is not installed: run `make install-engines` (or pip install 'emollm[engines]'; it builds "
                "llama-cpp-python from source, about 8 minutes on one core)"
            )
        self.spec = get_backbone(backbone)
        self.backbone = backbone
        default = gguf_of(backbone, llm_path)
        gguf = Path(gguf) if gguf is not None else default
        if gguf is None:
            raise ValueError(
                f"llama.cpp runs GGUF files: --llm-path {llm_path} is not a .gguf (use --llm-engine transformers for "
                "an HF folder)"
            )
        if not gguf.is_file():
            raise FileNotFoundError(f"--llm-path {gguf}: no such GGUF file")
        self.gguf = gguf.resolve()
        self.llm_path = None if llm_path is None else str(llm_path)
        embedded = llm_path is None and default is not None and self.gguf == default.resolve()
        self.source = "embedded" if embedded else str(self.gguf)
        self.sampling = Sampling(max_new_tokens, do_sample, temperature, top_p)
        self.threads = threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1
        self.n_ctx = n_ctx
        self.id = f"llama.cpp:{backbone}:{self.source}:{self.sampling.label}:llama-cpp-python-{self.version}"
        self.precision = "gguf"
        """Weights as stored in the GGUF (llama.cpp computes in their own types); for ``produced_by``."""
        self._loaded: tuple[Any, Any, Any, list[int]] | None = None
        self._lock = threading.Lock()

    def _load(self):
        if self._loaded is None:
            from llama_cpp import Llama

            from emollm.backbones import get_chat_format
            from emollm.backbones.loading import load_tokenizer, resolve_llm_path
            from emollm.engines.local import chat_stop_ids

            tokenizer = load_tokenizer(resolve_llm_path(self.spec, self.llm_path))  # converted from the same GGUF
            fmt = get_chat_format(self.spec.chat_format, default_system=self.spec.default_system)
            llm = Llama(
                str(self.gguf), n_ctx=self.n_ctx, n_threads=self.threads, n_threads_batch=self.threads, verbose=False
            )
            import weakref

            weakref.finalize(self, llm.close)  # freed with the engine or at exit, before llama.cpp's module goes
            self._loaded = (llm, tokenizer, fmt, chat_stop_ids(tokenizer, fmt))
        return self._loaded

    def prompt_ids(self, messages: Messages) -> list[int]:
        """The prompt's token ids (the same as :class:`~emollm.engines.local.TransformersEngine` feeds)."""
        from emollm.backbones.chat import tokenize_chat

        _, tokenizer, fmt, _ = self._load()
        ids, _ = tokenize_chat(tokenizer, fmt, list(messages), add_generation_prompt=True)
        return ids

    def tokens(
        self, messages: Messages, *, seed: int = 0, max_new_tokens: int | None = None, greedy: bool = False
    ) -> Iterator[int]:
        """New token ids one by one, until a stop token (not yielded) or the budget (``greedy``: whatever the
        engine's sampling)."""
        llm, _, _, stop = self._load()
        ids = self.prompt_ids(messages)
        budget = max_new_tokens or self.sampling.max_new_tokens
        if len(ids) + budget > self.n_ctx:
            raise ValueError(f"prompt of {len(ids)} tokens + {budget} new exceeds llama.cpp's n_ctx {self.n_ctx}")
        s = self.sampling
        if s.do_sample and not greedy:
            llm.set_seed(conversation_seed(seed, messages))
            kwargs = dict(temp=s.temperature, top_p=s.top_p, top_k=0, min_p=0.0)
        else:
            kwargs = dict(temp=0.0, top_k=0, top_p=1.0, min_p=0.0)
        stops = set(stop) | {llm.token_eos()}
        with self._lock:  # one llama.cpp context: one generation at a time
            for n, token in enumerate(llm.generate(ids, repeat_penalty=1.0, reset=True, **kwargs)):
                check_deadline("generation")  # under a deadline (the service's --timeout-s): stop between tokens
                if token in stops:
                    return
                yield int(token)
                if n + 1 >= budget:
                    return

    def complete(self, messages: Messages, *, seed: int = 0, max_new_tokens: int | None = None) -> Completion:
        """The answer to one conversation."""
        _, tokenizer, _, _ = self._load()
        budget = max_new_tokens or self.sampling.max_new_tokens
        new = list(self.tokens(messages, seed=seed, max_new_tokens=budget))
        text = tokenizer.decode(new, skip_special_tokens=True)
        return Completion(text, "length" if len(new) >= budget else "stop", self.produced_by())

    def stream(self, messages: Messages, *, max_new_tokens: int | None = None) -> Iterator[str]:
        """Greedy answer piece by piece (text decoded so far, yielded as it grows)."""
        _, tokenizer, _, _ = self._load()
        new: list[int] = []
        shown = ""
        for token in self.tokens(messages, max_new_tokens=max_new_tokens, greedy=True):  # greedy, as transformers'
            new.append(token)
            text = tokenizer.decode(new, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                continue
            yield text[len(shown) :]
            shown = text

    def produced_by(self) -> dict[str, Any]:
        """Engine and its version, GGUF, threads, sampling, and why this engine runs."""
        return {
            "engine": self.kind,
            "llama_cpp_python": self.version,
            "backbone": self.backbone,
            "weights": str(self.gguf),
            "threads": self.threads,
            "sampling": self.sampling.to_dict(),
            "chosen": self.chosen,
        }


class LlamaCppServer:
    """llama-cpp-python's OpenAI-compatible server on a loopback port, started and stopped with ``with``.

    ``with LlamaCppServer(gguf) as url:`` runs ``python -m llama_cpp.server`` on ``127.0.0.1`` (a free port),
    waits until ``/v1/models`` answers and yields the ``/v1`` base URL; leaving the block terminates the server.
    Requests are served one at a time by its single model (``interrupt_requests`` off, so a new request waits instead
    of cutting the running one).

    Args:
        gguf: The GGUF file to serve.
        alias: The model name the server answers with (``--llm-model``).
        threads: llama.cpp threads (default ``OMP_NUM_THREADS``, else every core).
        n_ctx: Context length.
        startup_s: Longest wait for the server to answer.
        log: File for the server's output (default: discarded).
    """

    def __init__(
        self,
        gguf: str | os.PathLike[str],
        *,
        alias: str = "emollm-llm",
        threads: int | None = None,
        n_ctx: int = 4096,
        startup_s: float = 120.0,
        log: str | os.PathLike[str] | None = None,
    ):
        if llama_cpp_version() is None:
            raise ImportError("llama-cpp-python is not installed: run `make install-engines`")
        self.gguf = Path(gguf)
        self.alias = alias
        self.threads = threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1
        self.n_ctx = n_ctx
        self.startup_s = startup_s
        self.log = log
        self.url = ""
        self._proc: Any = None

    def __enter__(self) -> str:
        import socket
        import subprocess
        import sys
        import time

        import httpx

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--model_alias", self.alias,
            "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(self.threads),
            "--n_threads_batch", str(self.threads), "--n_ctx", str(self.n_ctx), "--interrupt_requests", "False",
            "--verbose", "False",
        ]  # fmt: skip
        self._out = open(self.log, "ab") if self.log else None  # noqa: SIM115 - closed in __exit__
        self._proc = subprocess.Popen(cmd, stdout=self._out or subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}/v1"
        end = time.monotonic() + self.startup_s
        while time.monotonic() < end:
            if self._proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self._proc.returncode} at start ({' '.join(cmd)})")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.__exit__()
        raise RuntimeError(f"llama_cpp.server did not answer within {self.startup_s:g} s")

    def __exit__(self, *exc: object) -> None:
        import subprocess

        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=15)
        self._proc = None
        if getattr(self, "_out", None) is not None:
            self._out.close()
            self._out = None


def f32_gguf(src: str | os.PathLike[str]) -> Path:
    """The same GGUF with every tensor dequantised to float32 (metadata and tokenizer copied), cached under
    ``$EMOLLM_CACHE/gguf``: the weights emollm's transformers path computes with, for llama.cpp. With it, llama.cpp
    and transformers differ only by floating-point summation order, not by 4-bit kernels with 8-bit activations.
    """
    import tempfile

    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import dequantize

    from emollm.utils.cache import cache_dir

    src = Path(src)
    stat = src.stat()
    out = cache_dir() / "gguf" / f"{src.stem}-{stat.st_size}-f32.gguf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    reader = GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".tmp-", dir=out.parent)
    os.close(fd)
    try:
        writer = GGUFWriter(tmp, arch)
        for f in reader.fields.values():
            if f.name.startswith("GGUF.") or f.name == "general.architecture":
                continue
            if f.name == "general.file_type":
                writer.add_file_type(0)  # LLAMA_FTYPE_ALL_F32
                continue
            vtype = f.types[0]
            sub = f.types[-1] if vtype == GGUFValueType.ARRAY else None
            writer.add_key_value(f.name, f.contents(), vtype, sub_type=sub)
        for t in reader.tensors:
            kind = GGMLQuantizationType(int(t.tensor_type))
            data = np.asarray(t.data) if kind in (GGMLQuantizationType.F32,) else dequantize(t.data, kind)
            rows = list(reversed([int(x) for x in t.shape]))  # GGML lists the fastest dimension first
            writer.add_tensor(t.name, np.ascontiguousarray(data, dtype=np.float32).reshape(rows))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
