"""``emollm fusion``: classic fusion baselines on cached features.

    emollm fusion list [--json]                       the registered methods
    emollm fusion train CONFIG [key=value ...] [--fresh] [--stop-after N]
    emollm fusion eval CONFIG [key=value ...] [--split test|val|train] [--drop MODALITY ...]
    emollm fusion synth OUT [--task both|audio|face|either] [--n N]   synthetic feature cache + labels.csv

``train`` selects on the validation split only and never reads the test predictions; it resumes from
``OUT/last.safetensors`` when the run folder holds one of the same config (``--fresh`` starts over). ``eval``
loads ``OUT/best.safetensors`` and writes ``report_<split>.json`` (accuracy, UAR, weighted F1, per-class
precision/recall/F1, confusion matrix) and ``predictions_<split>.csv`` (``name,pred``); ``--drop face`` evaluates as
if the face were missing for every clip (``..._no-face``).

Exit status: 0 ok; 1 a run-time failure (missing features, a run folder of another config); 2 a config error.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

from emollm.fusion.config import FusionConfig, FusionConfigError, load_config
from emollm.utils.typed_config import check_range

__all__ = ["main", "prepare_run"]

logger = logging.getLogger(__name__)


def _labels_and_fold(cfg: FusionConfig) -> tuple[dict[str, str], dict[str, str] | None, Any]:
    """(name -> label, name -> speaker or None, the Fold of the config)."""
    from emollm.data.splits import Fold, speaker_folds

    d, s = cfg.data, cfg.split
    speakers: dict[str, str] | None = None
    split_col: dict[str, str] = {}
    listing = None
    if d.labels is not None:
        from emollm.fusion.data import read_labels_csv

        rows = read_labels_csv(d.labels)
        labels = {r["name"]: r["label"] for r in rows}
        if rows and "speaker" in rows[0]:
            speakers = {r["name"]: r["speaker"] for r in rows}
        if rows and "split" in rows[0]:
            split_col = {r["name"]: r["split"].lower() for r in rows}
    else:
        from emollm.data.corpora import read_corpus

        listing = read_corpus(d.corpus, d.root, **d.corpus_options)
        if listing.skipped:
            logger.warning(
                "%s: %d files could not be parsed (emollm data list shows them)", d.corpus, len(listing.skipped)
            )
        labels = {r.name: r.label for r in listing.records}
        speakers = {r.name: r.speaker for r in listing.records}
    if d.classes is not None:
        left_out = sum(1 for v in labels.values() if v not in d.classes)
        if left_out:
            logger.warning("%d clips have labels outside data.classes and are left out", left_out)
        labels = {k: v for k, v in labels.items() if v in d.classes}

    if s.by == "speaker":
        if speakers is None:
            raise FusionConfigError("split.by: speaker needs speakers: add a speaker column to data.labels")
        folds = speaker_folds(((n, speakers[n]) for n in sorted(labels)), s.folds, seed=s.seed, val=s.val)
    elif s.by == "published":
        if listing is None:
            raise FusionConfigError("split.by: published needs data.corpus (a corpus with published folds)")
        from emollm.data.corpora import corpus_folds

        folds = corpus_folds(listing, "published", val=s.val)
    elif s.by == "column":
        if not split_col:
            raise FusionConfigError("split.by: column needs a split column (train/val/test) in data.labels")
        bad = sorted({v for v in split_col.values() if v not in ("train", "val", "dev", "test")})
        if bad:
            raise FusionConfigError(f"data.labels: split values {bad} are not train/val/dev/test")
        part = {k: sorted(n for n in labels if split_col.get(n) in k) for k in (("train",), ("val", "dev"), ("test",))}
        folds = [Fold(0, part[("train",)], part[("val", "dev")], part[("test",)])]
    else:
        doc = json.loads(Path(s.file).read_text(encoding="utf-8"))
        folds = [Fold(f["fold"], f["train"], f["val"], f["test"], f.get("test_groups", [])) for f in doc["folds"]]
    if s.fold >= len(folds):
        raise FusionConfigError(f"split.fold: {s.fold} is out of range; the split has {len(folds)} folds")
    fold = folds[s.fold]
    keep = set(labels)
    fold = Fold(
        fold.index,
        [n for n in fold.train if n in keep],
        [n for n in fold.val if n in keep],
        [n for n in fold.test if n in keep],
        fold.test_groups,
        fold.val_groups,
    )
    return labels, speakers, fold


def prepare_run(cfg: FusionConfig):
    """Load the config's data: ``(train, val | None, test, modalities)`` as :class:`FeatureSet` s."""
    from emollm.fusion.data import load_feature_set

    labels, speakers, fold = _labels_and_fold(cfg)
    names = fold.train + fold.val + fold.test
    sub = {n: labels[n] for n in names}
    data = load_feature_set(
        sub,
        cfg.data.features,
        classes=cfg.data.classes or sorted(set(labels.values())),
        steps=cfg.data.steps,
        speakers={n: speakers[n] for n in names} if speakers else None,
        missing=cfg.data.missing,
    )
    modalities = cfg.model.modalities or list(cfg.data.features)
    unknown = [m for m in modalities if m not in cfg.data.features]
    if unknown:
        raise FusionConfigError(f"model.modalities: {unknown} have no folder in data.features")
    if not fold.train:
        raise FusionConfigError(f"split: fold {fold.index} has no training clips")
    val = data.subset(fold.val) if fold.val else None
    return data.subset(fold.train), val, data.subset(fold.test), modalities


def _build(cfg: FusionConfig, dims: dict[str, int], n_classes: int):
    from emollm.fusion.registry import build_fusion_model

    return build_fusion_model(
        cfg.model.method,
        dims,
        n_classes,
        hidden=cfg.model.hidden,
        dropout=cfg.model.dropout,
        modality_dropout=cfg.model.modality_dropout,
        steps=cfg.data.steps,
        **cfg.model.options,
    )


def _write_outputs(out: Path, tag: str, data, pred, report: dict[str, Any]) -> None:
    from emollm.utils.io import atomic_write_json, atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "pred"])
    for n, p in zip(data.names, pred, strict=True):
        w.writerow([n, data.classes[int(p)]])
    atomic_write_text(out / f"predictions_{tag}.csv", buf.getvalue())
    atomic_write_json(out / f"report_{tag}.json", report)


def _line(tag: str, r: dict[str, Any]) -> str:
    return f"{tag}: n={r['n']} accuracy {r['accuracy']:.4f}  UAR {r['uar']:.4f}  weighted F1 {r['weighted_f1']:.4f}"


def _check_run_folder(out: Path) -> None:
    """Refuse an ``out`` that is a file, or a folder holding anything but a fusion run (its files would be replaced)."""
    if out.is_file() or (out.is_symlink() and not out.exists()):
        raise FusionConfigError(f"out: {out} is a file, not a folder; set out= to a new folder (a run writes several)")
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        ours = "fingerprint" in json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        shown = ", ".join(sorted(p.name for p in out.iterdir())[:5])
        raise FusionConfigError(
            f"out: {out} is a folder that holds no fusion run (it has {shown}; no config.json of a run): a run would "
            "write over its files; set out= to a new or empty folder"
        )


def _train(cfg: FusionConfig, args: argparse.Namespace) -> int:
    import torch

    from emollm.fusion.trainer import evaluate, load_weights, predict, train_model
    from emollm.utils.io import atomic_write_json

    torch.set_num_threads(cfg.train.threads)
    out = Path(cfg.out)
    _check_run_folder(out)
    fingerprint = cfg.fingerprint()
    if out.exists() and args.fresh:
        for name in ("last.safetensors", "best.safetensors", "state.json", "log.jsonl"):
            (out / name).unlink(missing_ok=True)
    elif (out / "config.json").is_file() and (out / "last.safetensors").is_file():
        old = json.loads((out / "config.json").read_text()).get("fingerprint")
        if old != fingerprint:
            print(
                f"emollm fusion train: {out} holds a run of another config (fingerprint {old} != {fingerprint}); "
                "pass --fresh to start over there, or set out= to another folder",
                file=sys.stderr,
            )
            return 1
        print(f"resuming from {out / 'last.safetensors'}", file=sys.stderr)
    train, val, _test, modalities = prepare_run(cfg)
    dims = {m: train.dims[m] for m in modalities}
    model = _build(cfg, dims, len(train.classes))
    atomic_write_json(out / "config.json", {"fingerprint": fingerprint, **cfg.to_dict()})
    atomic_write_json(
        out / "model.json",
        {
            "method": cfg.model.method,
            "dims": dims,
            "classes": train.classes,
            "steps": cfg.data.steps,
            "hidden": cfg.model.hidden,
            "dropout": cfg.model.dropout,
            "modality_dropout": cfg.model.modality_dropout,
            "options": cfg.model.options,
        },
    )
    t = cfg.train
    result = train_model(
        model,
        train,
        val,
        out,
        epochs=t.epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        weight_decay=t.weight_decay,
        patience=t.patience,
        select=t.select,
        seed=t.seed,
        stop_after=args.stop_after,
        log=lambda msg: print(msg, file=sys.stderr) if not args.quiet else None,
    )
    if result.epochs_run < t.epochs and not result.stopped_early:
        print(f"stopped after epoch {result.epochs_run} (--stop-after); run again to resume", file=sys.stderr)
        return 0
    if (out / "best.safetensors").is_file():
        load_weights(model, out / "best.safetensors")
    summary = {"method": cfg.model.method, "selection": result.selection, **result.__dict__}
    if val is not None:
        report = evaluate(model, val)
        pred, _ = predict(model, val)
        _write_outputs(out, "val", val, pred, {**summary, **report})
        print(_line(f"val (best epoch {result.best_epoch})", report))
    atomic_write_json(out / "train_summary.json", summary)
    print(f"{cfg.model.method}: {result.epochs_run} epochs, {result.seconds_per_epoch:.3f} s/epoch; {result.selection}")
    return 0


def _eval(cfg: FusionConfig, args: argparse.Namespace) -> int:
    import torch

    from emollm.fusion.registry import build_fusion_model
    from emollm.fusion.trainer import evaluate, load_weights, predict

    torch.set_num_threads(cfg.train.threads)
    out = Path(cfg.out)
    if not (out / "best.safetensors").is_file() or not (out / "model.json").is_file():
        print(f"emollm fusion eval: no trained model in {out}; run emollm fusion train first", file=sys.stderr)
        return 1
    spec = json.loads((out / "model.json").read_text())
    used = list(spec["dims"])
    unknown = [m for m in args.drop if m not in used]
    if unknown:
        raise FusionConfigError(f"--drop {unknown[0]}: the model uses {', '.join(used)}; drop one of those")
    left = [m for m in used if m not in args.drop]
    if not left:
        raise FusionConfigError(
            f"--drop {' --drop '.join(dict.fromkeys(args.drop))} leaves no modality (the model uses "
            f"{', '.join(used)}); keep at least one: a model given nothing can only guess"
        )
    train, val, test, _ = prepare_run(cfg)
    data = {"train": train, "val": val, "test": test}[args.split]
    if data is None or not len(data):
        print(f"emollm fusion eval: the fold has no {args.split} split", file=sys.stderr)
        return 1
    if data.classes != spec["classes"]:
        print(f"emollm fusion eval: classes {data.classes} differ from the model's {spec['classes']}", file=sys.stderr)
        return 1
    model = build_fusion_model(
        spec["method"],
        spec["dims"],
        len(spec["classes"]),
        hidden=spec["hidden"],
        dropout=spec["dropout"],
        modality_dropout=spec["modality_dropout"],
        steps=spec["steps"],
        **spec["options"],
    )
    load_weights(model, out / "best.safetensors")
    tag = args.split
    for m in dict.fromkeys(args.drop):
        data = data.without(m)
        tag += f"_no-{m}"
    report = evaluate(model, data)
    pred, _ = predict(model, data)
    _write_outputs(
        out, tag, data, pred, {"method": spec["method"], "split": args.split, "dropped": args.drop, **report}
    )
    print(_line(tag, report))
    print(f"wrote {out / f'report_{tag}.json'} and {out / f'predictions_{tag}.csv'}")
    return 0


def _check_synth_target(out: Path, overwrite: bool) -> None:
    """Refuse a ``synth`` folder that is a file, or holds files ``synth`` did not write (unless ``overwrite``)."""
    from emollm.fusion.data import SYNTH_MANIFEST

    if out.is_file() or (out.is_symlink() and not out.exists()):
        raise ValueError(f"{out} is a file; give a folder for labels.csv and the feature files")
    if overwrite or not out.is_dir() or (out / SYNTH_MANIFEST).is_file() or not any(out.iterdir()):
        return  # new, empty, or an earlier synth set (ours to replace)
    shown = ", ".join(sorted(p.name for p in out.iterdir())[:5])
    raise ValueError(
        f"{out} already holds files that emollm fusion synth did not write ({shown}); labels.csv and the feature "
        "files would replace them: choose a new folder, or pass --overwrite"
    )


def _list(args: argparse.Namespace) -> int:
    from emollm.fusion.registry import FUSION_METHODS

    rows = [
        {"name": n, "number": s.number, "description": s.description, "defaults": s.defaults}
        for n, s in FUSION_METHODS.items()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['number']}  {r['name']:<15} {r['description']}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emollm fusion", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("list", help="registered fusion methods")
    sp.add_argument("--json", action="store_true")
    for name in ("train", "eval"):
        sp = sub.add_parser(name, help=f"{name} a fusion baseline from a YAML config")
        sp.add_argument("config")
        sp.add_argument("overrides", nargs="*", help="dotted key=value overrides (model.method=transformer)")
        sp.add_argument("--debug", action="store_true", help="show tracebacks")
        if name == "train":
            sp.add_argument("--fresh", action="store_true", help="discard a checkpoint in the run folder")
            sp.add_argument("--stop-after", type=int, help="stop after N epochs of this call (resume later)")
            sp.add_argument("--quiet", action="store_true", help="no per-epoch lines")
        else:
            sp.add_argument("--split", choices=("test", "val", "train"), default="test")
            sp.add_argument("--drop", action="append", default=[], metavar="MODALITY", help="evaluate without it")
    sp = sub.add_parser("synth", help="write a synthetic feature cache + labels.csv (tests, demos, bench)")
    sp.add_argument("out")
    sp.add_argument("--task", choices=("audio", "face", "both", "either"), default="both")
    sp.add_argument("--n", type=int, default=360)
    sp.add_argument("--steps", type=int, default=8)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--overwrite", action="store_true", help="write into a folder that holds other files")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``emollm fusion``."""
    args = _parser().parse_args(argv)
    if args.cmd == "list":
        return _list(args)
    if args.cmd == "synth":
        from emollm.fusion.data import write_synthetic

        try:
            check_range("--n", args.n, ge=2, le=1_000_000)
            check_range("--steps", args.steps, ge=1, le=10_000)
            _check_synth_target(Path(args.out), args.overwrite)
        except ValueError as e:
            print(f"emollm fusion synth: {e}", file=sys.stderr)
            return 2
        out = write_synthetic(args.out, args.task, n=args.n, steps=args.steps, seed=args.seed)
        print(f"wrote {out}/labels.csv and {out}/{{audio,face}}/<name>.npy ({args.n} clips, task {args.task})")
        return 0
    try:
        cfg = load_config(args.config, args.overrides)
    except (FusionConfigError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f"emollm fusion {args.cmd}: {e}", file=sys.stderr)
        return 2
    try:
        return _train(cfg, args) if args.cmd == "train" else _eval(cfg, args)
    except FusionConfigError as e:
        if args.debug:
            raise
        print(f"emollm fusion {args.cmd}: {e}", file=sys.stderr)
        return 2
    except (OSError, KeyError, ValueError) as e:
        if args.debug:
            raise
        why = e.args[0] if isinstance(e, KeyError) and e.args else e  # KeyError's str() adds quotes
        print(f"emollm fusion {args.cmd}: {why}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
