"""The spliced multimodal model on vLLM: our processor, encoders and projectors build the input embeddings, vLLM runs
the language model on them as prompt embeddings (``--enable-prompt-embeds``).

- :class:`SplicedFront`: everything of ``EmoLLMForCausalLM`` up to the language model's first layer: the processor
  (chat format, placeholder expansion), the encoder towers, projectors (type embeddings, fusion) and the LLM's
  input embedding table, and nothing else. It is ``EmoLLMForCausalLM`` itself with the language model replaced by
  its embedding table, so :meth:`SplicedFront.prompt_embeds` runs the very ``embed`` our own forward runs. Load it
  from an export of :func:`emollm.checkpoints.export_spliced` (reads the table alone from ``OUT/llm``; the decoder
  weights are never loaded) or build it from a model in memory.
- :class:`SplicedClient`: sends those embeddings to vLLM: a server's ``/v1/completions`` (``prompt_embeds``: a
  base64 ``torch.save`` of the ``(L, D)`` tensor, vLLM's wire format) through
  :class:`~emollm.engines.endpoint.EndpointEngine` (retries, time limits, concurrency), or ``vllm.LLM`` in this
  process (``EmbedsPrompt``). Greedy by default; placeholder ids get a ``-100`` logit bias (our own ``generate``
  suppresses them); the chat format's stop ids end the answer.

Example (GPU machine)::

    emollm export runs/instruct/final runs/vllm --vllm
    vllm serve runs/vllm/llm --enable-prompt-embeds --served-model-name emollm
    python -c "from emollm.engines.spliced import SplicedClient; ..."
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emollm.engines.base import BadResponse, Completion, Sampling

__all__ = ["SplicedClient", "SplicedFront", "encode_prompt_embeds"]


class _ScaledTable(nn.Module):
    """An input embedding table: row lookup times a constant (1, or Gemma's ``sqrt(hidden)``), as the LLM's own
    module computes it (:func:`emollm.checkpoints.export.embedding_facts` checks the equivalence at export)."""

    def __init__(self, weight: torch.Tensor, scale: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.scale = scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = nn.functional.embedding(ids, self.weight)  # (B, L) -> (B, L, D)
        return out if self.scale == 1.0 else out * torch.tensor(self.scale).to(self.weight.dtype)


class _EmbeddingOnly(nn.Module):
    """Stands in for the language model inside the front: it has an input embedding table and nothing else."""

    def __init__(self, table: nn.Module):
        super().__init__()
        self.embed_tokens = table

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens


class SplicedFront:
    """Processor + encoders + projectors + the LLM's embedding table; :meth:`prompt_embeds` is what vLLM receives.

    Args:
        model: An ``EmoLLMForCausalLM`` whose language model is an embedding table only.
        processor: Its ``EmoProcessor``.
        meta: The export's ``spliced.json`` (placeholder and stop ids, source), or ``{}``.
    """

    def __init__(self, model: Any, processor: Any, meta: dict[str, Any] | None = None):
        self.model = model.eval()
        self.processor = processor
        self.meta = dict(meta or {})

    @classmethod
    def from_model(cls, model: Any, processor: Any) -> SplicedFront:
        """The front of a model in memory (its modules shared, its language model left out)."""
        import copy

        from emollm.checkpoints.export import embedding_facts

        lm = model.language_model
        _, scale = embedding_facts(lm.get_base_model() if hasattr(lm, "get_base_model") else lm)
        weight = model.get_input_embeddings().weight.detach()
        front = copy.copy(model)  # a shallow copy: same towers/projectors, another language model attribute
        front._modules = dict(model._modules)
        front._modules["language_model"] = _EmbeddingOnly(_ScaledTable(weight, scale))
        meta = {"placeholder_token_ids": processor.placeholder_ids, "stop_token_ids": processor.stop_token_ids()}
        return cls(front, processor, meta)

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, device: str = "cpu") -> SplicedFront:
        """The front of an export (:func:`emollm.checkpoints.export_spliced`): ``front/`` plus the embedding table
        read alone from ``llm/``.

        Raises:
            FileNotFoundError: ``folder`` is not a spliced export (the message says how to make one).
            ValueError: A damaged or foreign export.
        """
        from safetensors import safe_open
        from transformers import AutoTokenizer

        from emollm.checkpoints import read_checkpoint, restore_into
        from emollm.checkpoints.export import SPLICED_FORMAT, SPLICED_VERSION
        from emollm.model.modeling import EmoLLMForCausalLM
        from emollm.model.processing import EmoProcessor

        folder = Path(folder)
        meta_file = folder / "spliced.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{folder} is not a spliced export: make one with `emollm export CKPT OUT --vllm`")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{meta_file} is not valid JSON ({e}); export again") from None
        if meta.get("format") != SPLICED_FORMAT or meta.get("version", 0) > SPLICED_VERSION:
            raise ValueError(
                f"{meta_file}: format {meta.get('format')!r} v{meta.get('version')} is not one this emollm reads"
            )
        front_dir, llm_dir = folder / meta["front"], folder / meta["llm"]
        info = read_checkpoint(front_dir)
        key = meta["embedding"]["key"]
        weight = None
        for f in sorted(llm_dir.glob("*.safetensors")):
            with safe_open(str(f), "pt", device=device) as st:
                if key in st.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                    weight = st.get_tensor(key)
                    break
        if weight is None:
            raise ValueError(f"{llm_dir} has no tensor {key!r}: the export is incomplete; export again")
        if list(weight.shape) != meta["embedding"]["shape"]:
            raise ValueError(
                f"{llm_dir}: {key} is {list(weight.shape)}, spliced.json says {meta['embedding']['shape']}"
            )
        table = _ScaledTable(weight, float(meta["embedding"]["scale"]))
        model = EmoLLMForCausalLM(info.config, _EmbeddingOnly(table))
        restore_into(model, info, parts=("connectors",))
        model.to(device)
        tokenizer = AutoTokenizer.from_pretrained(front_dir)
        processor = EmoProcessor.from_config(info.config, tokenizer, model.num_tokens)
        return cls(model, processor, meta)

    @torch.no_grad()
    def prompt_embeds(self, samples: Sequence[Any]) -> list[torch.Tensor]:
        """One ``(L, D)`` tensor per sample: its chat prompt (generation prompt added) with every placeholder position
        replaced by its projected modality feature, exactly as ``EmoLLMForCausalLM.embed`` builds it."""
        out = []
        for sample in samples:  # one at a time: no padding in what is sent
            batch = self.processor([sample], add_generation_prompt=True, padding_side="left")
            embeds = self.model.embed(batch.input_ids, batch.modality_inputs)  # (1, L) -> (1, L, D)
            out.append(embeds[0])
        return out

    @property
    def stop_token_ids(self) -> list[int]:
        return list(self.meta.get("stop_token_ids") or self.processor.stop_token_ids())

    @property
    def placeholder_token_ids(self) -> list[int]:
        ids = self.meta.get("placeholder_token_ids") or self.processor.placeholder_ids
        return sorted(int(i) for i in ids.values())


def encode_prompt_embeds(embeds: torch.Tensor) -> str:
    """vLLM's wire format for ``prompt_embeds``: base64 of ``torch.save`` of a contiguous CPU ``(L, D)`` tensor."""
    buf = io.BytesIO()
    torch.save(embeds.detach().to("cpu").contiguous(), buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


class SplicedClient:
    """Generation of the spliced model on vLLM from prompt embeddings.

    Args:
        front: The :class:`SplicedFront` (or an export folder to load it from).
        endpoint: A vLLM server's ``/v1`` base URL (``vllm serve OUT/llm --enable-prompt-embeds``); None: run
            ``vllm.LLM`` in this process on the export's ``llm/`` folder.
        model: The served model name (with ``endpoint``; ``--served-model-name``, default the ``llm/`` path).
        max_new_tokens: Answer budget.
        dtype: Embeddings are sent in this dtype (default: the table's; vLLM casts to the model's).
        llm_kwargs: Extra ``vllm.LLM`` arguments (in-process only), e.g. ``{"dtype": "float32"}``.
        **endpoint_kwargs: :class:`~emollm.engines.endpoint.EndpointEngine` options (``concurrency``, ``timeout``,
            ``retries``, ``api_key_env``).
    """

    def __init__(
        self,
        front: SplicedFront | str | os.PathLike[str],
        *,
        endpoint: str | None = None,
        model: str | None = None,
        max_new_tokens: int = 128,
        dtype: torch.dtype | None = None,
        llm_kwargs: dict[str, Any] | None = None,
        **endpoint_kwargs: Any,
    ):
        self.folder = None if isinstance(front, SplicedFront) else Path(front)
        self.front = front if isinstance(front, SplicedFront) else SplicedFront.load(front)
        self.sampling = Sampling(max_new_tokens)
        self.dtype = dtype
        self.llm_kwargs = dict(llm_kwargs or {})
        self._llm: Any = None
        self.engine = None
        if endpoint:
            from emollm.engines.endpoint import EndpointEngine

            served = model or (str((self.folder / "llm").resolve()) if self.folder else "")
            self.engine = EndpointEngine(endpoint, served, max_new_tokens=max_new_tokens, **endpoint_kwargs)

    def _embeds(self, samples: Sequence[Any]) -> list[torch.Tensor]:
        embeds = self.front.prompt_embeds(samples)
        return [e.to(self.dtype) if self.dtype is not None else e for e in embeds]

    def generate(self, samples: Sequence[Any]) -> list[Completion]:
        """Greedy answers for ``samples`` (``emollm.model.processing.Sample`` with a user turn), in order."""
        embeds = self._embeds(samples)
        return self._generate_http(embeds) if self.engine is not None else self._generate_vllm(embeds)

    def _generate_http(self, embeds: list[torch.Tensor]) -> list[Completion]:
        from concurrent.futures import ThreadPoolExecutor

        engine = self.engine
        assert engine is not None
        bias = {str(i): -100 for i in self.front.placeholder_token_ids}

        def one(e: torch.Tensor) -> Completion:
            body = {
                "model": engine.model,
                "prompt_embeds": encode_prompt_embeds(e),
                "max_tokens": self.sampling.max_new_tokens,
                "temperature": 0,
                "stop_token_ids": self.front.stop_token_ids,  # vLLM's extension of the completions API
                "logit_bias": bias,
            }
            payload = engine.post("/completions", body)
            try:
                choice = payload["choices"][0]
                text = choice["text"]
            except (KeyError, IndexError, TypeError):
                raise BadResponse(f"vLLM server {engine.base_url}: unexpected answer {str(payload)[:300]!r}") from None
            if not isinstance(text, str):
                raise BadResponse(f"vLLM server {engine.base_url}: choices[0].text is not text")
            meta = {"engine": "vllm (prompt embeds)", "endpoint": engine.base_url, "model": payload.get("model")}
            return Completion(text, "length" if choice.get("finish_reason") == "length" else "stop", meta)

        with ThreadPoolExecutor(max_workers=engine.concurrency) as pool:
            return list(pool.map(one, embeds))

    def _generate_vllm(self, embeds: list[torch.Tensor]) -> list[Completion]:
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise ImportError("vllm is not installed: pip install vllm (a GPU machine), or pass endpoint=URL") from None
        if self.folder is None:
            raise ValueError("in-process vLLM needs the export folder (SplicedClient(folder)), not a front in memory")
        if self._llm is None:
            self._llm = LLM(model=str(self.folder / "llm"), enable_prompt_embeds=True, **self.llm_kwargs)
        params = SamplingParams(
            temperature=0.0,
            max_tokens=self.sampling.max_new_tokens,
            stop_token_ids=self.front.stop_token_ids,
            logit_bias={i: -100.0 for i in self.front.placeholder_token_ids},
        )
        outs = self._llm.generate([{"prompt_embeds": e} for e in embeds], params, use_tqdm=False)
        done = []
        for o in outs:
            c = o.outputs[0]
            meta = {
                "engine": "vllm (prompt embeds, in process)",
                "model": str(self.folder / "llm"),
                "tokens": list(c.token_ids),
            }
            done.append(Completion(c.text, "length" if c.finish_reason == "length" else "stop", meta))
        return done
