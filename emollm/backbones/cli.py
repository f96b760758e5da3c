"""``emollm backbones``: list the registry (``--json`` for machines)."""

from __future__ import annotations

import argparse
import json
import sys

from emollm.backbones.registry import LORA_ALL_LINEAR, get_backbone, list_backbones


def cli_main(argv: list[str]) -> int:
    """``emollm backbones [--json]``: print the registry."""
    parser = argparse.ArgumentParser(prog="emollm backbones", description="List the registered LLM backbones.")
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
    print(f"\nLoRA targets (all): {', '.join(LORA_ALL_LINEAR)}")
    return 0
