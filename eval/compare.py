"""``emollm bench backbones``: the same recipe across LLM backbones (and LoRA vs QLoRA), one comparison table.

Each (run, variant) trains with ``emollm_train.sft`` in its own process — so peak memory is that run's alone — then
evaluates its final model on the recipe's validation split (never a test split): accuracy, UAR and the invalid
rate of parsed greedy answers (an answer naming no label or several is invalid, counted as wrong), validation loss,
train tokens/s, eval latency per sample, peak RSS and trainable parameters. On this machine the shipped config
compares tiny random models of every registry backbone plus the real SmolLM2 on synthetic data; pointing the runs
at real weights (``model.llm_path=...``) and data (``data.train=...``) runs it unchanged.

With ``stages`` (e.g. ``configs/bench/llms.yaml``) every run goes through a multi-stage recipe instead (stage 1, then
stage 2 from stage 1's ``final/``), and with ``test_config`` its final model is scored on the held-out split of an
``emollm eval`` YAML in a fresh process: accuracy and UAR with bootstrap 95% intervals, the invalid-answer rate and
the seconds from loading the checkpoint to its first answer, beside train tokens/s (optimizer steps only), peak RSS,
total and trainable parameters and the precision. Anything one run does differently is an override in its row
(``run overrides`` column); nothing is tuned per backbone elsewhere.

``fusion_runs`` add non-LLM baselines (``emollm.fusion``: a feature-level fusion classifier, trained and scored on its
validation fold) to the same table, variant ``fusion``. They cannot use the LLM rows' data (the tiny recipe's
synthetic features live in memory), so each one reads the data of its fusion config or, with ``synth: TASK``, a cache
written by ``emollm fusion synth`` into the output folder; the ``data`` column says which data every row used.

Under ``torchrun`` / ``accelerate launch`` the rows are shared out over the ranks (:mod:`emollm.jobs.distributed`):
each rank trains and evaluates its rows in fresh single processes pinned to its own GPU, and rank 0 writes the one
table. Rows then run side by side, which the table says (their timings are not measured alone).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emollm.jobs.distributed import Job, Launch, single_process_env

VARIANTS: dict[str, list[str]] = {"lora": [], "qlora": ["model.quantization=4bit"]}
COLUMNS = [
    ("run", "run", "{}"),
    ("variant", "variant", "{}"),
    ("data", "data", "{}"),
    ("val_accuracy", "accuracy", "{:.3f}"),
    ("val_uar", "UAR", "{:.3f}"),
    ("invalid_rate", "invalid", "{:.2f}"),
    ("val_loss", "val loss", "{:.3f}"),
    ("train_tokens_per_s", "train tok/s", "{:.0f}"),
    ("eval_s_per_sample", "eval s/sample", "{:.3f}"),
    ("peak_rss_gb", "peak RSS GB", "{:.2f}"),
    ("trainable_params", "trainable", "{:,}"),
]


def _ci(key: str):
    """A ``value [lo, hi]`` cell from ``key`` and ``key_ci``."""

    def cell(row: dict[str, Any]) -> str | None:
        if row.get(key) is None:
            return None
        lo, hi = row.get(f"{key}_ci") or (None, None)
        return f"{row[key]:.3f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None else "")

    return cell


#: The table of staged runs scored on a held-out split (``test_config``); a callable reads the whole row.
HELDOUT_COLUMNS = [
    ("run", "run", "{}"),
    ("variant", "variant", "{}"),
    (lambda r: " ".join(r.get("run_overrides") or []) or None, "run overrides", "{}"),
    ("steps_per_stage", "steps", "{}"),
    (_ci("test_accuracy"), "accuracy [95% CI]", "{}"),
    (_ci("test_uar"), "UAR [95% CI]", "{}"),
    ("test_invalid_rate", "invalid", "{:.2f}"),
    ("test_n", "n test", "{}"),
    ("train_tokens_per_s", "train tok/s", "{:.0f}"),
    ("peak_rss_gb", "peak RSS GB", "{:.2f}"),
    ("first_answer_s", "s to 1st answer", "{:.1f}"),
    ("total_params", "total params", "{:,}"),
    ("trainable_params", "trainable", "{:,}"),
    ("precision", "precision", "{}"),
]


@dataclass
class RunSpec:
    """One row group of the table: a name and the overrides that make it (e.g. ``model.backbone=llama3``)."""

    name: str
    overrides: list[str] = field(default_factory=list)
    """Applied to every stage of this run; they are the run's whole difference from the others (the table shows
    them)."""


@dataclass
class StageSpec:
    """One training stage of a staged recipe: an ``emollm train`` YAML and overrides for this stage only (e.g. its
    data file), applied before the run's own overrides."""

    config: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class FusionRunSpec:
    """A non-LLM baseline row: an ``emollm fusion`` config (or just a method on synthetic data) trained and scored on
    its validation fold."""

    name: str
    config: str | None = None
    """An ``emollm fusion train`` YAML (its data, split, model and train sections)."""
    method: str | None = None
    """Instead of ``config``: a method of ``emollm fusion list`` with default settings (needs ``synth``)."""
    synth: str | None = None
    """Use ``emollm fusion synth --task SYNTH`` data (written under the bench's output folder) instead of the
    config's data: ``both``, ``audio``, ``face`` or ``either``."""
    overrides: list[str] = field(default_factory=list)
    """Fusion config overrides (e.g. ``train.epochs=5``)."""

    def __post_init__(self) -> None:
        if (self.config is None) == (self.method is None):
            raise ValueError(f"fusion_runs {self.name}: give exactly one of config or method")
        if self.method is not None and self.synth is None:
            raise ValueError(f"fusion_runs {self.name}: method needs synth (a config names its data)")
        if self.synth is not None and self.synth not in ("both", "audio", "face", "either"):
            raise ValueError(f"fusion_runs {self.name}: synth must be both, audio, face or either, not {self.synth!r}")


@dataclass
class CompareConfig:
    """What ``emollm bench backbones`` compares."""

    base_config: str = "configs/debug/tiny.yaml"
    """The training recipe every run shares (a ``emollm train`` YAML)."""
    runs: list[RunSpec] = field(default_factory=list)
    variants: list[str] = field(default_factory=lambda: ["lora", "qlora"])
    """``lora`` and/or ``qlora`` (4-bit base through bitsandbytes)."""
    common_overrides: list[str] = field(default_factory=list)
    """Overrides applied to every run (e.g. ``train.max_steps=24``)."""
    eval_samples: int = 32
    """Validation samples answered per run."""
    fusion_runs: list[FusionRunSpec] = field(default_factory=list)
    """Non-LLM baselines (``emollm.fusion``) in the same table; their data is not the recipe's (``data`` column)."""
    stages: list[StageSpec] = field(default_factory=list)
    """Training stages every run goes through in order (stage 1, stage 2, ...); each later stage starts from the
    previous stage's ``final/`` (``train.init_from``). Empty: ``base_config`` alone."""
    test_config: str | None = None
    """An ``emollm eval`` YAML (needs ``stages``): each final model is scored on its held-out split in a fresh
    process, with bootstrap 95% intervals; ``checkpoint`` and ``output_dir`` are set per run."""
    test_overrides: list[str] = field(default_factory=list)
    """Overrides of ``test_config`` shared by every run (e.g. ``n_bootstrap=2000``)."""
    output_dir: str = "runs/bench-backbones"

    @classmethod
    def load(cls, path: str | os.PathLike, overrides: list[str] | None = None) -> CompareConfig:
        """Read a bench YAML with the project's typed-config loader (errors name the file and the key)."""
        from emollm.utils import typed_config

        data = typed_config.load_yaml_mapping(path, error=ValueError, expected="a bench config")
        try:
            cfg = typed_config.convert(cls, data, "", error=ValueError)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        cfg.common_overrides = list(cfg.common_overrides) + list(overrides or [])
        bad = [v for v in cfg.variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"{path}: unknown variant(s) {bad}; choose from {sorted(VARIANTS)}")
        if not cfg.runs and not cfg.fusion_runs:
            raise ValueError(f"{path}: no runs to compare")
        if cfg.test_config and not cfg.stages:
            raise ValueError(f"{path}: test_config needs stages (the training YAMLs whose final model it scores)")
        for where in [*(st.config for st in cfg.stages), *([cfg.test_config] if cfg.test_config else [])]:
            if not Path(where).is_file():
                raise ValueError(f"{path}: {where} (in stages/test_config) does not exist")
        return cfg


# ------------------------------------------------------------------------------------------------ one run
def run_one(base_config: str, overrides: list[str], eval_samples: int) -> dict[str, Any]:
    """Train with the shared recipe, then evaluate the final model on the validation split (in this process)."""
    import torch

    from emollm.labels import LabelParser
    from emollm.model.generation import chat
    from emollm.runconfig import load_config
    from emollm_eval.metrics import INVALID, accuracy, uar
    from emollm_train.sft import SFTRecipe

    overrides = [*overrides, *_tiny_base(base_config, overrides)]
    cfg = load_config(base_config, overrides)
    recipe = SFTRecipe(cfg)
    recipe.setup()
    try:
        t0 = time.perf_counter()
        summary = recipe.train()
        train_s = time.perf_counter() - t0
        model, processor = recipe.raw_model, recipe.processor
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        model.eval()
        items = [recipe.val_ds[i] for i in range(len(recipe.val_ds))]
        items = [it for it in items if it.task == "emotion" and it.label is not None][:eval_samples]
        if not items:
            raise ValueError("the validation split has no 'emotion' samples to score; set data.val_tasks: [emotion]")
        prompts = [
            type(it.sample)(messages=it.sample.messages[:-1], features=it.sample.features, name=it.sample.name)
            for it in items
        ]
        t0 = time.perf_counter()
        answers = chat(
            model, processor, prompts, max_new_tokens=cfg.train.eval_generate_tokens, batch_size=cfg.train.batch_size
        )
        eval_s = time.perf_counter() - t0
        with torch.no_grad():
            val_loss = float(model(**processor([it.sample for it in items]).model_inputs()).loss)
    finally:
        recipe.cleanup()
    parser = LabelParser(cfg.data.labels)
    parsed = [parser.parse(a).label for a in answers]
    gold = [it.label for it in items]
    preds = [p if p is not None else INVALID for p in parsed]
    return {
        "data": f"recipe ({cfg.data.format})",
        "backbone": cfg.model.backbone,
        "tiny": cfg.model.tiny is not None,
        "quantization": cfg.model.quantization,
        "steps": summary["steps"],
        "train_s": train_s,
        "train_tokens_per_s": summary.get("tokens_per_s"),
        "val_accuracy": accuracy(gold, preds),
        "val_uar": uar(gold, preds, list(cfg.data.labels)),
        "invalid_rate": sum(p is None for p in parsed) / len(parsed),
        "val_loss": val_loss,
        "eval_samples": len(items),
        "eval_s_per_sample": eval_s / len(items),
        "trainable_params": trainable,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "example_answer": answers[0],
    }


def _tiny_base(config: str, overrides: list[str], out_dir: str | None = None) -> list[str]:
    """The overrides to add when a QLoRA run would quantize a random tiny LLM, which has no weights to quantize:
    the tiny model is saved to disk first, so QLoRA runs the real loading path (none otherwise)."""
    from emollm.runconfig import load_config

    quantized = [o for o in overrides if o.startswith("model.quantization=")]
    if not quantized:
        return []
    cfg = load_config(config, [o for o in overrides if o not in quantized])
    if cfg.model.tiny is None:
        return []
    base = Path(out_dir or cfg.train.output_dir) / "tiny-base"
    materialize_tiny_base(cfg, base)
    return ["model.tiny=null", f"model.llm_path={base}"]


def _step_throughput(log_path: Path) -> tuple[int, float]:
    """(tokens, seconds) of the optimizer steps in a ``train_log.jsonl`` (validation and saving left out)."""
    tokens, seconds = 0, 0.0
    for line in log_path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "train":
            tokens += rec["tokens"]
            seconds += rec["step_time_s"]
    return tokens, seconds


def run_stages(stages: list[dict[str, Any]], overrides: list[str], out_dir: str) -> dict[str, Any]:
    """Train through ``stages`` (:class:`StageSpec` dicts) in this process, stage k+1 from stage k's ``final/``;
    returns the training facts.

    Train tokens/s counts the optimizer steps of every stage (``train_log.jsonl``), not validation or saving.
    """
    from emollm.runconfig import load_config
    from emollm_train.sft import SFTRecipe

    overrides = [*overrides, *_tiny_base(stages[0]["config"], [*stages[0]["overrides"], *overrides], out_dir)]
    init_from: str | None = None
    steps, tokens, seconds, train_s = [], 0, 0.0, 0.0
    for i, stage in enumerate(stages, 1):
        stage_out = Path(out_dir) / f"stage{i}"
        extra = [f"train.output_dir={stage_out}"] + ([f"train.init_from={init_from}"] if init_from else [])
        cfg = load_config(stage["config"], [*stage["overrides"], *overrides, *extra])
        recipe = SFTRecipe(cfg)
        recipe.setup()
        try:
            t0 = time.perf_counter()
            summary = recipe.train()
            train_s += time.perf_counter() - t0
            model = recipe.raw_model
            total = sum(p.numel() for p in model.parameters())
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            weights = str(next(model.language_model.parameters()).dtype).removeprefix("torch.")
            autocast = recipe.precision["mixed_precision"]
        finally:
            recipe.cleanup()
        n_tok, n_s = _step_throughput(stage_out / "train_log.jsonl")
        tokens, seconds = tokens + n_tok, seconds + n_s
        steps.append(summary["steps"])
        init_from = summary["final"]
    return {
        "data": f"recipe ({cfg.data.format}: {cfg.data.train})",
        "backbone": cfg.model.backbone,
        "tiny": cfg.model.tiny is not None,
        "quantization": cfg.model.quantization,
        "stages": [st["config"] for st in stages],
        "steps_per_stage": "+".join(map(str, steps)),
        "steps": sum(steps),
        "train_s": train_s,
        "train_tokens": tokens,
        "train_tokens_per_s": tokens / seconds if seconds > 0 else None,
        "total_params": total,
        "trainable_params": trainable,
        "precision": f"{weights} weights" + ("" if autocast in (None, "no") else f", {autocast} autocast"),
        "final": init_from,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


def run_test(test_config: str, overrides: list[str], checkpoint: str, out_dir: str) -> dict[str, Any]:
    """Score ``checkpoint`` on the held-out split of ``test_config`` (``emollm eval``) in this (fresh) process.

    ``first_answer_s`` is the time from loading the checkpoint to its first answer (one sample, batch of one, in its
    own output folder), the cold start a user waits for; the full run then loads the model again.
    """
    from emollm_eval.config import load_config
    from emollm_eval.runner import run_eval

    common = [*overrides, f"checkpoint={checkpoint}"]
    first = load_config(test_config, [*common, f"output_dir={Path(out_dir) / 'first-answer'}", "limit=1",
                                      "batch_size=1", "n_bootstrap=0"])  # fmt: skip
    t0 = time.perf_counter()
    run_eval(first, progress=False)
    first_answer_s = time.perf_counter() - t0
    result = run_eval(load_config(test_config, [*common, f"output_dir={out_dir}"]), progress=False)
    m = result.metrics
    return {
        "test_split": m.get("split"),
        "test_n": m["n"],
        "test_accuracy": m["accuracy"],
        "test_accuracy_ci": m.get("accuracy_ci"),
        "test_uar": m["uar"],
        "test_uar_ci": m.get("uar_ci"),
        "test_invalid_rate": m["invalid_rate"],
        "test_n_bootstrap": m.get("n_bootstrap"),
        "test_precision": m.get("precision"),
        "test_metrics": str(Path(out_dir) / "metrics.json"),
        "first_answer_s": first_answer_s,
        "eval_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


def run_fusion(spec: dict[str, Any], data_dir: str, out_dir: str) -> dict[str, Any]:
    """Train one ``emollm.fusion`` baseline and score it on its validation fold (the test fold is never used).

    Args:
        spec: A :class:`FusionRunSpec` as a dict.
        data_dir: Where ``synth`` data is written (reused when it is there).
        out_dir: The run's output folder (weights, log).
    """
    import tempfile

    import torch

    from emollm.fusion.cli import _build, prepare_run
    from emollm.fusion.config import load_config
    from emollm.fusion.data import write_synthetic
    from emollm.fusion.trainer import evaluate, load_weights, train_model

    overrides = list(spec.get("overrides") or [])
    data = "fusion config data"
    if spec.get("synth"):
        root = Path(data_dir)
        if not (root / "labels.csv").is_file():
            write_synthetic(root, spec["synth"])
        overrides = [
            f"data.labels={root / 'labels.csv'}",
            f"data.features={{audio: {root / 'audio'}, face: {root / 'face'}}}",
            *overrides,
        ]
        data = f"emollm fusion synth --task {spec['synth']}"
    path = spec.get("config")
    if path is None:  # a method with default settings
        path = Path(tempfile.mkdtemp()) / "fusion.yaml"
        path.write_text(f"data: {{labels: x.csv, features: {{audio: x}}}}\nmodel: {{method: {spec['method']}}}\n")
    cfg = load_config(path, [*overrides, f"out={out_dir}"])
    torch.set_num_threads(cfg.train.threads)
    train, val, _test, modalities = prepare_run(cfg)
    scored = val if val is not None else train  # no validation fold: a training-set score, marked below
    model = _build(cfg, {m: train.dims[m] for m in modalities}, len(train.classes))
    t = cfg.train
    t0 = time.perf_counter()
    result = train_model(model, train, val, Path(out_dir), epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                         weight_decay=t.weight_decay, patience=t.patience, select=t.select, seed=t.seed,
                         log=lambda msg: None)  # fmt: skip
    train_s = time.perf_counter() - t0
    if (Path(out_dir) / "best.safetensors").is_file():
        load_weights(model, Path(out_dir) / "best.safetensors")
    t0 = time.perf_counter()
    report = evaluate(model, scored)
    eval_s = time.perf_counter() - t0
    return {
        "data": data if val is not None else f"{data} (train split: no validation fold)",
        "method": cfg.model.method,
        "non_llm": True,
        "epochs": result.epochs_run,
        "train_s": train_s,
        "val_accuracy": report["accuracy"],
        "val_uar": report["uar"],
        "invalid_rate": 0.0,  # a classifier always names a class
        "val_loss": report["loss"],
        "eval_samples": len(scored),
        "eval_s_per_sample": eval_s / max(len(scored), 1),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


def materialize_tiny_base(cfg, out: Path) -> Path:
    """Save the tiny random LLM (and its tokenizer) that ``cfg.model.tiny`` describes as a model folder."""
    import torch
    from transformers import AutoModelForCausalLM

    from emollm.backbones import get_backbone
    from emollm_train.build import tiny_tokenizer

    m = cfg.model
    tok = tiny_tokenizer(m.backbone, m.tiny.vocab_size)
    text_config = get_backbone(m.backbone).text_config(
        n_layers=m.tiny.n_layers, hidden=m.tiny.hidden, vocab_size=len(tok), initializer_range=m.tiny.init_std
    )
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(tok, key, None) is not None:
            setattr(text_config, key, getattr(tok, key))
    torch.manual_seed(cfg.train.seed)
    AutoModelForCausalLM.from_config(text_config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


# ------------------------------------------------------------------------------------------------ table
def format_table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of ``rows``: the held-out columns when any row was scored on a test split, else the
    validation ones."""
    columns = HELDOUT_COLUMNS if any("test_accuracy" in r for r in rows) else COLUMNS

    def cell(row: dict[str, Any], key: Any, fmt: str) -> str:
        value = key(row) if callable(key) else row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return fmt.format(value)

    head = "| " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(cell(r, k, f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def _worker(kind: str, job: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """Run one job in a fresh process: ``(result, error)``."""
    proc = subprocess.run(
        [sys.executable, "-m", "emollm_eval.compare", kind, json.dumps(job)],
        capture_output=True,
        text=True,
        env=single_process_env(Launch.from_env()),  # alone on this rank's device, never in the launcher's job
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return None, (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return json.loads(lines[-1]), ""


def compare(cfg: CompareConfig, *, only: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every (run, variant) and fusion run in a fresh process; returns the rows (also written to
    ``output_dir``)."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    ranks = Job("bench", unit="run")  # torchrun / accelerate launch: each rank runs its share of the rows
    owner = ranks.assign(_row_keys(cfg, only))
    for run in cfg.runs:
        if only and run.name not in only:
            continue
        for variant in cfg.variants:
            if owner[f"{run.name}/{variant}"] != ranks.rank:
                rows.append({})  # another rank's row
                continue
            shared = [*cfg.common_overrides, *run.overrides, *VARIANTS[variant]]
            run_dir = str(out / f"{run.name}-{variant}")
            row: dict[str, Any] = {"run": run.name, "variant": variant, "run_overrides": list(run.overrides)}
            print(f"[bench backbones] {run.name} / {variant} ...", flush=True)
            if not cfg.stages:
                overrides = [*shared, f"train.output_dir={run_dir}"]
                job = {"base_config": cfg.base_config, "overrides": overrides, "eval_samples": cfg.eval_samples}
                rows.append(_row(row, *_worker("--worker", job)))
                continue
            job = {"stages": [asdict(st) for st in cfg.stages], "overrides": shared, "out_dir": run_dir}
            rows.append(_row(row, *_worker("--stages-worker", job)))
            if cfg.test_config and "error" not in row:
                job = {"test_config": cfg.test_config, "overrides": cfg.test_overrides,
                       "checkpoint": row["final"], "out_dir": str(Path(run_dir) / "test")}  # fmt: skip
                print(f"[bench backbones] {run.name} / {variant}: held-out split ...", flush=True)
                _row(row, *_worker("--test-worker", job))
    for fusion in cfg.fusion_runs:
        if only and fusion.name not in only:
            continue
        if owner[f"{fusion.name}/fusion"] != ranks.rank:
            rows.append({})
            continue
        job = {
            "spec": asdict(fusion),
            "data_dir": str(out / f"fusion-synth-{fusion.synth}"),
            "out_dir": str(out / f"{fusion.name}-fusion"),
        }
        print(f"[bench backbones] {fusion.name} / fusion (non-LLM baseline) ...", flush=True)
        rows.append(_row({"run": fusion.name, "variant": "fusion"}, *_worker("--fusion-worker", job)))
    rows = [next((r[i] for r in ranks.gather(rows) if r[i]), {}) for i in range(len(rows))]  # every rank's rows
    if not ranks.is_main:
        return rows
    from emollm.utils.io import atomic_write_text

    paired = paired_section(rows) if cfg.test_config else ""
    results = {"config": asdict(cfg), "command": " ".join(sys.argv), "rows": rows}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    table = format_table([r for r in rows if "error" not in r])
    failed = [f"- {r['run']} / {r['variant']}: {r['error']}" for r in rows if "error" in r]
    if cfg.test_config:
        note = (
            f"\n\nMetrics are on the held-out split of `{cfg.test_config}` (never used for training or selection), "
            "with percentile bootstrap 95% intervals; invalid answers count as wrong. Stages: "
            + " -> ".join(f"`{st.config}` `{' '.join(st.overrides)}`".replace(" ``", "") for st in cfg.stages)
            + ". Train tok/s counts optimizer steps only; peak RSS is the training process's.\n"
        )
    else:
        note = "\n\nMetrics are on the recipe's validation split (never a test split); "
        note += "invalid answers count as wrong.\n"
    if any(r.get("non_llm") for r in rows):
        note += (
            "\nRows of variant `fusion` are non-LLM baselines (`emollm.fusion` classifiers on their validation fold): "
            "they are trained on other data than the LLM rows (see the `data` column), so compare them with each "
            "other and by cost, not by accuracy against the LLM rows.\n"
        )
    if ranks.distributed:
        note += (
            f"\nRows ran {ranks.world} at a time, one per process of `{ranks.launch.launcher}`, each on its rank's "
            "device: their timings were measured side by side, not alone.\n"
        )
    recipe = " + ".join(f"`{st.config}`" for st in cfg.stages) if cfg.stages else f"`{cfg.base_config}`"
    shared = f"\nShared overrides: `{' '.join(cfg.common_overrides)}`\n" if cfg.common_overrides else ""
    atomic_write_text(
        out / "results.md",
        f"# Backbone comparison\n\nRecipe: {recipe}\n{shared}\n{table}{note}{paired}"
        + ("\nFailed runs:\n" + "\n".join(failed) + "\n" if failed else ""),
    )
    return rows


PAIRED_RESAMPLES = 10_000
"""Bootstrap resamples of the paired accuracy difference (seed 0)."""


def paired_accuracy_difference(
    reference: dict[str, bool], other: dict[str, bool], *, n_resamples: int = PAIRED_RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Accuracy of ``other`` minus ``reference`` on the same samples, with a paired percentile bootstrap 95% interval
    (both rows resampled with the same sample indices, so what the two share cancels out).

    Args:
        reference / other: Sample name -> answered correctly (an invalid answer is False). Same names on both sides.

    Raises:
        ValueError: The two hold different samples (a paired difference needs the same ones).
    """
    import numpy as np

    from emollm_eval.metrics import bootstrap_ci

    if set(reference) != set(other) or not reference:
        missing = sorted(set(reference) ^ set(other))[:5]
        raise ValueError(f"a paired difference needs the same samples on both sides (differ: {missing})")
    names = sorted(reference)
    a = np.array([reference[n] for n in names], dtype=float)
    b = np.array([other[n] for n in names], dtype=float)
    lo, hi = bootstrap_ci(lambda t, p: float((p - t).mean()), a, b, n_resamples=n_resamples, seed=seed)
    return {
        "difference": float(b.mean() - a.mean()),
        "ci": [float(lo), float(hi)],
        "n": len(names),
        "both_right": int((a * b).sum()),
        "only_reference": int((a * (1 - b)).sum()),
        "only_other": int(((1 - a) * b).sum()),
        "n_resamples": n_resamples,
        "seed": seed,
    }


def _correct_by_sample(row: dict[str, Any]) -> dict[str, bool] | None:
    """Name -> correct, from the predictions the row's held-out evaluation wrote (None without them)."""
    path = Path(row["test_metrics"]).parent / "predictions.jsonl" if row.get("test_metrics") else None
    if path is None or not path.is_file():
        return None
    out: dict[str, bool] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        out[rec["name"]] = rec.get("label") is not None and rec.get("label") == rec.get("gold")
    return out


def paired_section(rows: list[dict[str, Any]]) -> str:
    """The results.md section comparing every scored row with the first one on the same held-out samples (each row's
    ``paired_vs_first`` is set too); empty with fewer than two scored rows."""
    scored = [(r, c) for r in rows if "error" not in r for c in [_correct_by_sample(r)] if c is not None]
    if len(scored) < 2:
        return ""
    (ref, ref_correct), lines = scored[0], []
    for row, correct in scored[1:]:
        try:
            d = paired_accuracy_difference(ref_correct, correct)
        except ValueError as e:
            lines.append(f"| {row['run']} / {row['variant']} | not paired: {e} | | |")
            continue
        row["paired_vs_first"] = d
        sep = d["ci"][0] > 0 or d["ci"][1] < 0
        lines.append(
            f"| {row['run']} / {row['variant']} | {d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] | "
            f"{d['both_right']} / {d['only_reference']} / {d['only_other']} of {d['n']} | "
            f"{'yes' if sep else 'no: indistinguishable here'} |"
        )
    return (
        f"\n## Paired differences on the same held-out samples\n\nAccuracy of each row minus `{ref['run']} / "
        f"{ref['variant']}`'s, with a paired percentile bootstrap 95% interval ({PAIRED_RESAMPLES:,} resamples, seed "
        "0; both rows resampled with the same samples). One training seed per row: the spread over seeds is not in "
        "these intervals.\n\n| row | difference [95% CI] | both right / only first / only this | separated |\n"
        "|---|---|---|---|\n" + "\n".join(lines) + "\n"
    )


def _row_keys(cfg: CompareConfig, only: list[str] | None) -> list[str]:
    """``run/variant`` of every row :func:`compare` makes, in its order (what the ranks share out)."""
    keys = [f"{r.name}/{v}" for r in cfg.runs if not only or r.name in only for v in cfg.variants]
    return keys + [f"{f.name}/fusion" for f in cfg.fusion_runs if not only or f.name in only]


def _row(row: dict[str, Any], result: dict[str, Any] | None, error: str) -> dict[str, Any]:
    if result is None:
        row["error"] = error
        print(f"  failed: {error}", file=sys.stderr)
    else:
        row.update(result)
    return row


def main(argv: list[str]) -> int:
    """``emollm bench backbones --config CFG [key=value ...]`` (and the internal ``--worker JOB``)."""
    if argv[:1] == ["--worker"]:
        job = json.loads(argv[1])
        import logging

        logging.basicConfig(level=logging.WARNING)
        result = run_one(job["base_config"], job["overrides"], job["eval_samples"])
        print(json.dumps(result, default=str), flush=True)
        return 0
    if argv[:1] == ["--stages-worker"]:
        job = json.loads(argv[1])
        import logging

        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(run_stages(job["stages"], job["overrides"], job["out_dir"]), default=str), flush=True)
        return 0
    if argv[:1] == ["--test-worker"]:
        job = json.loads(argv[1])
        result = run_test(job["test_config"], job["overrides"], job["checkpoint"], job["out_dir"])
        print(json.dumps(result, default=str), flush=True)
        return 0
    if argv[:1] == ["--fusion-worker"]:
        job = json.loads(argv[1])
        result = run_fusion(job["spec"], job["data_dir"], job["out_dir"])
        print(json.dumps(result, default=str), flush=True)
        return 0
    parser = argparse.ArgumentParser(prog="emollm bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    bb = sub.add_parser("backbones", help="train + evaluate the same recipe across backbones, one table")
    bb.add_argument("--config", default="configs/bench/backbones.yaml")
    bb.add_argument("--only", help="comma-separated run names")
    bb.add_argument("--output-dir")
    bb.add_argument("overrides", nargs="*", help="training overrides for every run, e.g. train.max_steps=4")
    args = parser.parse_args(argv)
    try:
        cfg = CompareConfig.load(args.config, args.overrides)
    except (OSError, ValueError) as e:
        print(f"emollm bench: {e}", file=sys.stderr)
        return 2
    if args.output_dir:
        cfg.output_dir = args.output_dir
    rows = compare(cfg, only=args.only.split(",") if args.only else None)
    print(format_table([r for r in rows if "error" not in r]))
    print(f"\nwritten: {cfg.output_dir}/results.md, results.json")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
