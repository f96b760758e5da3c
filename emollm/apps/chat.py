"""``emollm chat --media FILE [--checkpoint DIR]``: several questions about one clip, answers streamed.

The clip is analysed first (clue mode, :mod:`emollm.apps.clue_mode`), and the measured evidence — expression
scores, action units, voice, transcript, what is missing, the fused estimate — is given to the model as context, so
the conversation is about what was measured, not about what a small LLM imagines:

- without ``--checkpoint`` the embedded LLM (SmolLM2-135M, or ``--backbone`` / ``--llm-path``) answers from the
  clue description alone;
- with ``--checkpoint`` the trained multimodal model answers with the clip's features spliced in, and the clue
  description in its system prompt.

Questions come from ``--ask`` (repeatable; for scripts) or, without it, from an interactive prompt (an empty line
or end of input ends the session). The checkpoint-only form ``emollm chat CHECKPOINT "question" [--audio F.npy]``
is unchanged (``emollm.apps.demo.chat_main``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from emollm.apps.analysis import Analysis

__all__ = ["ClipChat", "main"]

SYSTEM = (
    "You are an emotion analysis assistant. Answer questions about one video clip using only the measured "
    "evidence below; say so when the evidence does not tell. Evidence:\n{clues}"
)


class ClipChat:
    """A multi-turn conversation about one clip.

    Args:
        media: The clip (video, audio, image or text file).
        checkpoint: A trained checkpoint folder; None chats with a text LLM over the clue description.
        labels: The label set of the analysis.
        backbone: Text LLM of the clue mode (registry name).
        llm_path: Local weights for that backbone (or the checkpoint's base).
        max_new_tokens: Answer length budget.
        analysis: A precomputed analysis of ``media`` (skips the clue analysis).
        engine: Without a checkpoint, the text LLM's engine: :func:`emollm.engines.build_engine` keywords
            (``engine``, ``endpoint``, ``model``, ``api_key_env``, ...).
    """

    def __init__(
        self,
        media: str | Path,
        *,
        checkpoint: str | Path | None = None,
        labels: Iterable[str] | None = None,
        backbone: str = "smollm2",
        llm_path: str | None = None,
        max_new_tokens: int = 160,
        analysis: Analysis | None = None,
        engine: dict[str, Any] | None = None,
    ) -> None:
        from emollm.apps.clue_mode import ClueAnalyzer, ClueSettings
        from emollm.labels import MER2023_LABELS

        self.media = Path(media)
        self.max_new_tokens = max_new_tokens
        if analysis is None:
            settings = ClueSettings(reasoning="template", reasoning_backbone=backbone, llm_path=llm_path)
            with ClueAnalyzer(tuple(labels or MER2023_LABELS), settings) as clue:
                analysis = clue(self.media)
        self.analysis = analysis
        self.system = SYSTEM.format(clues=analysis.clue_description() or "(nothing could be measured)")
        self.history: list[dict[str, str]] = []
        self.checkpoint = checkpoint
        if checkpoint is None:
            from emollm.engines import build_engine

            opts = {"concurrency": 1, **(engine or {})}
            self._llm: Any = build_engine(backbone, llm_path, max_new_tokens=max_new_tokens, precision="auto", **opts)
        else:
            if engine and engine.get("endpoint"):
                raise ValueError("--llm-endpoint is for the chat without --checkpoint (a checkpoint runs in process)")
            from emollm.apps.analyze import clip_features
            from emollm.checkpoints import load_model

            self._model, self._processor = load_model(checkpoint, llm_path=llm_path)
            self._features, _ = clip_features(self._model, self.media)

    def ask(self, question: str) -> Iterator[str]:
        """Stream the answer to ``question``; the exchange joins the history."""
        question = question.strip()
        if not question:
            raise ValueError("empty question")
        system = {"role": "system", "content": self.system}
        if self.checkpoint is None:
            messages = [system, *self.history, {"role": "user", "content": question}]
            pieces = self._llm.stream(messages, max_new_tokens=self.max_new_tokens)
        else:
            from emollm.model.generation import stream_chat
            from emollm.model.processing import Sample

            # The modality markers go in the first user turn only: the features are spliced there once.
            first = not self.history
            markers = "".join(f"<{m}>" for m, f in self._features.items() if f is not None) if first else ""
            user = {"role": "user", "content": f"{markers} {question}".strip()}
            messages = [system, *self.history, user]
            sample = Sample(messages=messages, features={m: f for m, f in self._features.items() if f is not None})
            pieces = stream_chat(self._model, self._processor, sample, max_new_tokens=self.max_new_tokens)
            question = user["content"]
        answer = []
        for piece in pieces:
            answer.append(piece)
            yield piece
        self.history += [{"role": "user", "content": question}, {"role": "assistant", "content": "".join(answer)}]


def _questions(asked: list[str] | None) -> Iterator[str]:
    if asked:
        yield from asked
        return
    while True:
        try:
            line = input("you> ")
        except EOFError:
            return
        if not line.strip():
            return
        yield line


def main(argv: list[str]) -> int:
    """``emollm chat``: with ``--media``, a conversation about a clip; otherwise the checkpoint-only form."""
    if "--media" not in argv and not any(a.startswith("--media=") for a in argv):
        from emollm.apps.demo import chat_main

        return chat_main(argv)
    parser = argparse.ArgumentParser(prog="emollm chat", description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", required=True, help="the clip (video, audio, image or .txt)")
    parser.add_argument("--checkpoint", help="a trained checkpoint; without it the embedded LLM answers from clues")
    parser.add_argument("--ask", action="append", metavar="QUESTION", help="a question (repeatable); else interactive")
    parser.add_argument("--backbone", default="smollm2", help="text LLM of the clue mode")
    parser.add_argument("--llm-path", help="local LLM weights (folder or .gguf)")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    from emollm.engines import EngineError, add_engine_arguments, engine_options

    add_engine_arguments(parser, concurrency=1)
    args = parser.parse_args(argv)
    from emollm.media import MediaError

    try:
        session = ClipChat(
            args.media, checkpoint=args.checkpoint, backbone=args.backbone, llm_path=args.llm_path,
            max_new_tokens=args.max_new_tokens, engine=engine_options(args),
        )  # fmt: skip
    except (OSError, ValueError, ImportError, MediaError) as e:
        if args.debug:
            raise
        print(f"emollm chat: {e}", file=sys.stderr)
        return 2
    a = session.analysis
    print(f"[{a.file}: {a.label or 'no label'} ({a.mode} mode); evidence given to the model:]")
    print(session.system.split("Evidence:\n", 1)[1])
    for question in _questions(args.ask):
        if args.ask:
            print(f"you> {question}")
        print("emollm> ", end="", flush=True)
        try:
            for piece in session.ask(question):
                print(piece, end="", flush=True)
        except EngineError as e:
            print(f"\nemollm chat: {e}", file=sys.stderr)
            return 1
        print()
    return 0
