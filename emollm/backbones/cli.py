"""``emollm backbones``: list the registry (``--json`` for machines), and ``emollm backbones show NAME --chat FILE``:
exactly what a backbone's LLM is fed for a conversation (the rendered prompt; ``--tokens`` its token ids, with the
modality placeholders and the tokens the loss is computed on marked)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from emollm.backbones.registry import BackboneSpec, get_backbone, get_chat_format, list_backbones

SHOW_EPILOG = """\
FILE holds the conversation: a JSON list of {"role", "content"} messages (or {"messages": [...]}). A user content
is a string, where <audio>, <face>, <video>, <frame> mark where a modality goes (as in training data), or a list of
parts: {"type": "text", "text": ...} and {"type": "audio"} etc. Each modality becomes the backbone's placeholder
token, repeated as many times as its encoder + projector produce (--modality-tokens audio=8; 1 by default).

examples:
  emollm backbones show llama3_1 --chat conv.json --generation-prompt
  emollm backbones show gemma3_270m --chat conv.json --tokens            (embedded weights: their tokenizer)
  emollm backbones show qwen3 --chat conv.json --tokens --llm-path /models/Qwen3-8B
"""


class ShowError(ValueError):
    """Bad input to ``backbones show``: printed as one line, exit status 2."""


def cli_main(argv: list[str]) -> int:
    """``emollm backbones [--json]``: print the registry; ``emollm backbones show ...``: see :func:`show_main`."""
    if argv and argv[0] == "show":
        return show_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="emollm backbones",
        description="List the registered LLM backbones. `emollm backbones show NAME --chat FILE` prints what one "
        "of them is fed for a conversation.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects")
    args = parser.parse_args(argv)
    rows = [get_backbone(n).to_row() for n in list_backbones()]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    cols = ["name", "family", "chat_format", "placeholder_token_policy", "default_dtype", "weights", "hf_id"]
    table = [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=False)))
    print("  ".join("-" * w for w in widths))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=False)))
    print("\nLoRA targets per backbone: emollm backbones --json; what a backbone is fed: emollm backbones show --help")
    return 0


def show_main(argv: list[str]) -> int:
    """``emollm backbones show NAME --chat FILE [--generation-prompt] [--tokens] [--llm-path DIR]``."""
    parser = argparse.ArgumentParser(
        prog="emollm backbones show",
        description="Print the prompt a backbone's LLM is fed for a conversation (its chat format, placeholders "
        "expanded); --tokens adds the token ids.",
        epilog=SHOW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", help="registry name (emollm backbones)")
    parser.add_argument("--chat", required=True, type=Path, metavar="FILE", help="the conversation (JSON)")
    parser.add_argument("--generation-prompt", action="store_true", help="end with the header of an answer")
    parser.add_argument("--tokens", action="store_true", help="also print the token ids (needs a tokenizer)")
    parser.add_argument("--llm-path", metavar="DIR", help="model folder (or .gguf) whose tokenizer --tokens uses")
    parser.add_argument(
        "--modality-tokens",
        default="",
        metavar="M=N,...",
        help="placeholder tokens per modality input, e.g. audio=8,video=16 (default 1 each)",
    )
    parser.add_argument("--thinking", choices=("on", "off"), help="the template's enable_thinking (where it has one)")
    parser.add_argument("--date", metavar="STR", help="the date the template writes (LLaMA-3.1, SmolLM3)")
    parser.add_argument("--json", action="store_true", help="one JSON document: text, loss spans, tokens")
    args = parser.parse_args(argv)
    try:
        spec = _spec(args.name)
        fmt = _format(spec, args.thinking, args.date)
        counts = _counts(args.modality_tokens, spec)
        messages = expand_modalities(_read_chat(args.chat), spec.placeholder_tokens(), counts, str(args.chat))
        chat = fmt.render(messages, add_generation_prompt=args.generation_prompt)
        tokenizer = _tokenizer(spec, args.llm_path, counts) if args.tokens else None
    except (ShowError, FileNotFoundError, ValueError, TypeError) as e:
        print(f"emollm backbones show: {e}", file=sys.stderr)
        return 2
    rows = None if tokenizer is None else token_rows(tokenizer, fmt, messages, spec, args.generation_prompt)
    if args.json:
        doc: dict[str, Any] = {
            "backbone": spec.name,
            "chat_format": fmt.name,
            "generation_prompt": args.generation_prompt,
            "text": chat.text,
            "loss_spans": [list(span) for span in chat.train_spans],
        }
        if rows is not None:
            doc["tokens"] = rows
        json.dump(doc, sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return 0
    sys.stdout.write(chat.text)
    if not chat.text.endswith("\n"):
        sys.stdout.write("\n")
    if rows is not None:
        print()
        print(token_table(rows))
    return 0


def _spec(name: str) -> BackboneSpec:
    try:
        return get_backbone(name)
    except ValueError as e:
        raise ShowError(str(e)) from None


def _format(spec: BackboneSpec, thinking: str | None, date: str | None):
    fmt = get_chat_format(spec.chat_format, default_system=spec.default_system)
    overrides: dict[str, Any] = {}
    if thinking is not None:
        if not getattr(fmt, "has_thinking_switch", False):
            raise ShowError(f"--thinking: chat format {fmt.name!r} ({spec.name}) has no thinking switch")
        overrides["enable_thinking"] = thinking == "on"
    if date is not None:
        if not getattr(fmt, "writes_date", False):
            raise ShowError(f"--date: chat format {fmt.name!r} ({spec.name}) writes no date")
        overrides["date_string"] = date
    return get_chat_format(fmt.name, default_system=spec.default_system, **overrides)


def _counts(text: str, spec: BackboneSpec) -> dict[str, int]:
    counts = {m: 1 for m in spec.placeholder_tokens()}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in counts or not value.isdigit() or int(value) < 1:
            raise ShowError(
                f"--modality-tokens: {item!r} is not MODALITY=N with N >= 1 (modalities: {', '.join(counts)})"
            )
        counts[key] = int(value)
    return counts


def _read_chat(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"--chat {path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShowError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, dict) and "messages" in data:
        data = data["messages"]
    if not isinstance(data, list):
        raise ShowError(f'{path}: expected a list of {{"role", "content"}} messages (or {{"messages": [...]}})')
    return data


def expand_modalities(
    messages: list[Any], placeholders: dict[str, str], counts: dict[str, int], where: str = "messages"
) -> list[dict[str, Any]]:
    """Messages with every modality reference in a user turn replaced by its placeholder token, ``counts[m]`` times.

    A reference is a content part ``{"type": m}`` or a marker ``<m>`` in a string (``<m:start:end>`` places the
    tokens ``[start, end)`` of that input, as ``emollm.model.processing`` does). This is the expansion the processor
    applies before tokenising, with the token counts given instead of computed by an encoder.
    """
    marker = re.compile(r"<(" + "|".join(map(re.escape, placeholders)) + r")(?::(\d+):(\d*))?>")

    def span_count(m: str, start: str | None, end: str | None) -> int:
        if start is None:
            return counts[m]
        stop = int(end) if end else counts[m]
        if stop <= int(start):
            raise ShowError(f"{where}: span <{m}:{start}:{end}> is empty (with {m}={counts[m]} tokens)")
        return stop - int(start)

    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise ShowError(f"{where}: messages[{i}] must be an object with 'role' and 'content'")
        content = msg.get("content")
        if isinstance(content, list):
            pieces = []
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    pieces.append(str(part.get("text", "")))
                elif kind in placeholders and msg.get("role") == "user":
                    span = part.get("span")
                    start, end = (
                        (None, None) if span is None else (str(span[0]), "" if span[1] is None else str(span[1]))
                    )
                    pieces.append(placeholders[kind] * span_count(kind, start, end))
                else:
                    raise ShowError(
                        f"{where}: messages[{i}].content[{j}] has type {kind!r}; expected 'text' or, in a user turn, "
                        f"one of {', '.join(placeholders)}"
                    )
            content = "".join(pieces)
        elif isinstance(content, str) and msg.get("role") == "user":
            content = marker.sub(lambda m: placeholders[m[1]] * span_count(m[1], m[2], m[3]), content)
        out.append({"role": msg.get("role"), "content": content})
    return out


def _tokenizer(spec: BackboneSpec, llm_path: str | None, counts: dict[str, int]):
    from emollm.backbones.loading import load_tokenizer, prepare_tokenizer, resolve_llm_path

    if llm_path is None and spec.embedded is None:
        raise ShowError(
            f"--tokens needs a tokenizer: backbone {spec.name!r} ({spec.hf_id}) has no embedded weights, so pass "
            "--llm-path /path/to/the/model (a folder with its tokenizer files, or a .gguf)"
        )
    tokenizer = load_tokenizer(resolve_llm_path(spec, llm_path))
    prepare_tokenizer(spec, tokenizer, list(counts))  # the placeholder and pad tokens the model is built with
    return tokenizer


def token_rows(
    tokenizer, fmt, messages: list[dict[str, Any]], spec: BackboneSpec, generation_prompt: bool
) -> list[dict[str, Any]]:
    """The prompt's tokens as ``tokenize_chat`` gives them to the model: id, token, the modality whose placeholder it
    is (or None) and whether the loss is computed on it."""
    from emollm.backbones.chat import tokenize_chat

    ids, loss = tokenize_chat(tokenizer, fmt, messages, add_generation_prompt=generation_prompt)
    vocab = tokenizer.get_vocab()
    placeholder_of = {vocab[t]: m for m, t in spec.placeholder_tokens().items() if t in vocab}
    pieces = tokenizer.convert_ids_to_tokens(ids)
    return [
        {"id": i, "token": piece, "placeholder": placeholder_of.get(i), "loss": trained}
        for i, piece, trained in zip(ids, pieces, loss, strict=True)
    ]


def token_table(rows: list[dict[str, Any]]) -> str:
    """One line per token: position, id, the token (JSON-quoted), and a note for placeholders and loss tokens."""
    n_loss = sum(r["loss"] for r in rows)
    n_placeholders = sum(r["placeholder"] is not None for r in rows)
    lines = [f"{len(rows)} tokens ({n_loss} in the loss, {n_placeholders} modality placeholders)"]
    lines.append(f"{'pos':>5}  {'id':>7}  {'token':<32}  note")
    for pos, r in enumerate(rows):
        note = f"<- {r['placeholder']} placeholder" if r["placeholder"] else ("loss" if r["loss"] else "")
        lines.append(f"{pos:>5}  {r['id']:>7}  {json.dumps(r['token'], ensure_ascii=False):<32}  {note}".rstrip())
    return "\n".join(lines)
