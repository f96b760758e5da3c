"""Generation engines: where the tokens of text-only generation come from, behind one interface, and the spliced
model served by vLLM.

- ``base``: :class:`TextEngine` (``complete``, ``complete_many``, ``imap``, ``stream``, ``generate``,
  ``produced_by``), :class:`Sampling`, :class:`Completion`, the errors (fatal ones stop a job, which resumes);
- ``local``: transformers in this process (:class:`TransformersEngine`, the path every model loads through);
- ``llamacpp``: llama.cpp in this process on a GGUF (:class:`LlamaCppEngine`; ``emollm[engines]``);
- ``endpoint``: any OpenAI-compatible server (:class:`EndpointEngine`: bounded concurrency, retries with backoff,
  time limits, provenance of every answer);
- ``select``: :func:`build_engine` and the ``--llm-*`` flags shared by MERR, the EMER judge, ``analyze``, ``chat``
  and ``assess``;
- ``spliced``: the multimodal model on vLLM: the front (processor + encoders + projectors + the LLM's embedding
  table) of a checkpoint exported by :func:`emollm.checkpoints.export_spliced`, and a client that sends the spliced
  input embeddings as prompt embeddings.

Imports: ``utils``, ``backbones``, ``model`` and ``checkpoints``; never an app or a recipe (apps and recipes import
it).
"""

from emollm.engines.base import (
    BadResponse,
    Completion,
    EngineBase,
    EngineError,
    EngineUnavailable,
    RequestRejected,
    Sampling,
    TextEngine,
    prompt_seed,
    trim_to_sentence,
)
from emollm.engines.endpoint import DEFAULT_API_KEY_ENV, EndpointEngine
from emollm.engines.select import LOCAL_ENGINES, add_engine_arguments, build_engine, choose_local_engine, engine_options

__all__ = [
    "DEFAULT_API_KEY_ENV",
    "LOCAL_ENGINES",
    "BadResponse",
    "Completion",
    "EndpointEngine",
    "EngineBase",
    "EngineError",
    "EngineUnavailable",
    "RequestRejected",
    "Sampling",
    "TextEngine",
    "add_engine_arguments",
    "build_engine",
    "choose_local_engine",
    "engine_options",
    "prompt_seed",
    "trim_to_sentence",
]
