"""``emollm data``: list a local corpus copy, and split it speaker-independently.

    emollm data list CORPUS ROOT [--json] [--strict] [--option classes=4]
    emollm data split CORPUS ROOT --by speaker|published [--folds K] [--seed S] [--no-val] [--json] [--out FILE]
    emollm data corpora [--json]

``list`` prints one record per clip (tab-separated: name, label, speaker, path, extra fields) on stdout and, on
stderr, a summary with the files it could not parse (``--json`` puts both in one JSON object on stdout). ``split``
prints each fold's test/val speakers and sizes (``--json``/``--out``: the full fold file with every clip name).

Exit status: 0 on success; 1 when ``--strict`` found a malformed file (named) or nothing could be read; 2 for a
usage error (unknown corpus, bad option, too few speakers for ``--folds``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from emollm.data.corpora import CORPORA, CorpusFormatError, corpus_folds, read_corpus

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emollm data", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    corpora = ", ".join(CORPORA)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("corpus", help=f"one of: {corpora}")
        sp.add_argument("root", help="your local copy of the corpus (a folder; a list file for merr/mer2023)")
        sp.add_argument("--strict", action="store_true", help="refuse the first malformed file instead of listing it")
        sp.add_argument(
            "--option", action="append", default=[], metavar="KEY=VALUE", help="reader option (iemocap: classes=4)"
        )
        sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        sp.add_argument("--debug", action="store_true", help="show tracebacks")

    common(sub.add_parser("list", help="one record per clip, plus the files that could not be parsed"))
    sp = sub.add_parser("split", help="speaker-independent k folds, or the corpus' published folds")
    common(sp)
    sp.add_argument("--by", choices=("speaker", "published"), default="speaker")
    sp.add_argument("--folds", type=int, default=5, help="k for --by speaker (default 5)")
    sp.add_argument("--seed", type=int, default=0, help="tie-break seed (the split is deterministic for a seed)")
    sp.add_argument("--no-val", action="store_true", help="no validation split (fold i: test i, train the rest)")
    sp.add_argument("--out", help="also write the fold file (JSON) here, atomically (an existing file: --overwrite)")
    sp.add_argument("--overwrite", action="store_true", help="let --out replace a file that is not a fold file")
    sc = sub.add_parser("corpora", help="the corpora with a reader")
    sc.add_argument("--json", action="store_true")
    return p


def _options(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--option {item!r}: expected KEY=VALUE (e.g. classes=4)")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _not_a_fold_file(path: Path) -> str | None:
    """None when ``path`` is a fold file of ``emollm data split --out`` (ours to replace), else why not."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "not a fold file of emollm data split: not JSON"
    if not isinstance(doc, dict) or not {"corpus", "by", "folds"} <= set(doc):
        return "a JSON file that is not a fold file of emollm data split"
    return None


def _check_fold_target(out: str, root: str, overwrite: bool) -> None:
    """Refuse a ``--out`` that is the corpus (or a file inside it), a folder, or a file that is not a fold file."""
    from emollm.utils.io import check_output_file

    target, corpus = Path(out), Path(root)
    if corpus.is_dir() and target.exists() and corpus.resolve() in target.resolve().parents:
        raise ValueError(
            f"--out {out} is a file of the corpus {root}; writing it would change the corpus (even with --overwrite): "
            "write the fold file outside it"
        )
    check_output_file(target, flag="--out", inputs=[root], overwrite=overwrite, ours=_not_a_fold_file)


def _extra_text(extra: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in extra.items() if k not in ("text", "other_paths"))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``emollm data``."""
    args = _parser().parse_args(argv)
    if args.cmd == "corpora":
        rows = {name: {"description": s.description, "published": s.published} for name, s in CORPORA.items()}
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for name, row in rows.items():
                print(
                    f"{name:<8}  {row['description']}" + (f" [published: {row['published']}]" * bool(row["published"]))
                )
        return 0
    if args.cmd == "split" and args.out:
        try:  # before the corpus is read: a refused --out costs nothing
            _check_fold_target(args.out, args.root, args.overwrite)
        except ValueError as e:
            print(f"emollm data split: {e}", file=sys.stderr)
            return 2
    try:
        listing = read_corpus(args.corpus, args.root, strict=args.strict, **_options(args.option))
    except CorpusFormatError as e:
        print(f"emollm data {args.cmd}: {args.corpus}: malformed: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"emollm data {args.cmd}: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        if args.debug:
            raise
        print(f"emollm data {args.cmd}: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a folder or file of the corpus that cannot be read
        if args.debug:
            raise
        print(f"emollm data {args.cmd}: {args.root}: cannot read it ({e})", file=sys.stderr)
        return 1
    if not listing.records:
        print(f"emollm data {args.cmd}: no clips found\n{listing.summary()}", file=sys.stderr)
        return 1

    if args.cmd == "list":
        if args.json:
            print(json.dumps(listing.to_dict(), indent=1, ensure_ascii=False))
        else:
            for r in listing.records:
                print(f"{r.name}\t{r.label}\t{r.speaker}\t{r.path or '-'}\t{_extra_text(r.extra)}")
            print(listing.summary(), file=sys.stderr)
        return 0

    try:
        folds = corpus_folds(listing, args.by, args.folds, seed=args.seed, val=not args.no_val)
    except ValueError as e:
        print(f"emollm data split: {e}", file=sys.stderr)
        return 2
    doc = {
        "corpus": listing.corpus,
        "root": listing.root,
        "by": args.by,
        "seed": args.seed,
        "folds": [f.to_dict() for f in folds],
        "skipped": [s.path for s in listing.skipped],
    }
    if args.out:
        from emollm.utils.io import atomic_write_json

        atomic_write_json(args.out, doc)
    if args.json:
        print(json.dumps(doc, indent=1, ensure_ascii=False))
    else:
        for f in folds:
            print(
                f"fold {f.index}: test {len(f.test):>5} clips ({', '.join(f.test_groups[:6])}"
                f"{' ...' if len(f.test_groups) > 6 else ''})  val {len(f.val):>5}  train {len(f.train):>5}"
            )
        print(listing.summary(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
