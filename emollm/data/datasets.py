"""Training data: MERR / NCEV / JSONL / synthetic records -> task-pool conversations (``Sample``) with features.

Records are read through Hugging Face ``datasets`` (map-style, or streamed for large pseudo-label pools) and
normalised to the columns ``name, label, text, reason, caption`` (any may be None but ``name``):

============  =======================================================================================================
format        source
============  =======================================================================================================
merr_json     ``MERR_{coarse,fine}_grained.json`` (``emollm.data.merr_files.read_merr_json``): label = ``pseu_emotion``,
              text = ``text``, reason = ``smp_reason_caption`` or else ``caption``, caption = ``caption``
ncev          whitespace ``N [C] E [V]`` lists (``emollm.data.merr_files.read_label_txt``): name + label only
jsonl         ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` with ``name`` and any of ``label`` (alias
              ``emotion``, ``pseu_emotion``), ``text`` (``subtitle``, ``sentence``), ``reason``
              (``smp_reason_caption``), ``caption``
synthetic     ``emollm.data.synthetic.SyntheticEmotionData`` (features in memory)
============  =======================================================================================================

Features are joined by sample name from ``<feature_root>/<feature_dir>/<name>.npy`` (``FeatureFiles``). Every random
choice made for a sample (task, instruction, label order, modality dropout) comes from an RNG seeded by
``(seed, epoch, index)``, so a sample is a pure function of its key: data order and content survive a resume and
do not depend on worker processes.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor

from emollm.processing import MARKERS, Sample
from emollm.runconfig import DataConfig

__all__ = [
    "RECORD_COLUMNS",
    "FeatureFiles",
    "FeatureSource",
    "InMemoryFeatures",
    "InstructionDataset",
    "PromptBuilder",
    "StreamingInstructions",
    "TrainItem",
    "load_aux_records",
    "load_records",
    "sample_rng",
    "split_by_name",
    "synthetic_records",
]

log = logging.getLogger(__name__)

RECORD_COLUMNS: tuple[str, ...] = ("name", "label", "text", "reason", "caption")
_ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("name", "video", "video_name", "id"),
    "label": ("label", "emotion", "pseu_emotion"),
    "text": ("text", "subtitle", "sentence", "transcript"),
    "reason": ("reason", "smp_reason_caption"),
    "caption": ("caption",),
}


def sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The RNG of one sample in one epoch (string seeds are hashed with SHA-512: stable across runs)."""
    return random.Random(f"{seed}:{epoch}:{index}")


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from CSV/parquet
        return None
    text = str(value)
    return text if text.strip() else None


def _normalise(row: dict[str, Any], where: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for col, names in _ALIASES.items():
        out[col] = next((_str_or_none(row[n]) for n in names if n in row and row[n] is not None), None)
    if out["name"] is None:
        raise ValueError(f"{where}: a record has no 'name' (the sample id that joins features); got keys {sorted(row)}")
    return out


def _read_transcripts(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    from emollm.data.merr_files import read_transcriptions_csv

    return read_transcriptions_csv(path)


def _hf_builder(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "json"
    if suffix in (".csv", ".parquet"):
        return suffix[1:]
    raise ValueError(f"{path}: unsupported extension {suffix!r}; use .jsonl, .json, .csv or .parquet")


def load_records(fmt: str, path: str, *, transcripts: str | None = None, streaming: bool = False):
    """Read a training/validation file as a ``datasets.Dataset`` (``IterableDataset`` when streaming) whose columns
    are ``RECORD_COLUMNS``. Subtitles missing from the file are joined from ``transcripts`` by name."""
    import datasets

    subtitles = _read_transcripts(transcripts)
    if fmt in ("merr_json", "ncev"):
        if streaming:
            raise ValueError(f"{fmt} files are read whole; streaming needs data.format=jsonl")
        rows = []
        if fmt == "merr_json":
            from emollm.data.merr_files import read_merr_json

            for rec in read_merr_json(path, "auto"):
                rows.append(
                    {
                        "name": rec.name,
                        "label": rec.pseu_emotion,
                        "text": _str_or_none(rec.text),
                        "reason": _str_or_none(rec.smp_reason_caption) or _str_or_none(rec.caption),
                        "caption": _str_or_none(rec.caption),
                    }
                )
        else:
            from emollm.data.merr_files import read_label_txt

            rows = [
                {"name": r.name, "label": r.label, "text": None, "reason": None, "caption": None}
                for r in read_label_txt(path, "auto")
            ]
        for r in rows:
            if r["text"] is None and r["name"] in subtitles:
                r["text"] = _str_or_none(subtitles[r["name"]])
        return datasets.Dataset.from_list(rows, features=_features())
    if fmt != "jsonl":
        raise ValueError(f"unknown data format {fmt!r}")
    ds = datasets.load_dataset(_hf_builder(path), data_files=str(path), split="train", streaming=streaming)

    def norm(row):
        out = _normalise(row, str(path))
        if out["text"] is None and out["name"] in subtitles:
            out["text"] = _str_or_none(subtitles[out["name"]])
        return out

    columns = ds.column_names
    if streaming:
        return ds.map(norm, remove_columns=columns)  # lazily, per example
    return ds.map(norm, remove_columns=columns, features=_features(), desc=None)


def _features():
    import datasets

    return datasets.Features({c: datasets.Value("string") for c in RECORD_COLUMNS})


def load_aux_records(
    path: str, *, text_field: str, label_field: str, label_map: dict[str, str], labels: Sequence[str], prefix: str
) -> tuple[Any, int]:
    """Text-emotion rows (e.g. GoEmotions, EmpatheticDialogues) -> records with ``text`` and a label of ``labels``.

    Returns ``(dataset, dropped)``: rows whose label maps to none of ``labels`` are dropped and counted."""
    import datasets

    ds = datasets.load_dataset(_hf_builder(path), data_files=str(path), split="train")
    for col in (text_field, label_field):
        if col not in ds.column_names:
            raise ValueError(
                f"{path}: no column {col!r}; columns are {ds.column_names} (set data.aux[i].text_field / label_field)"
            )
    known = set(labels)
    rows = []
    dropped = 0
    for i, row in enumerate(ds):
        raw = row[label_field]
        raw = raw[0] if isinstance(raw, list) and len(raw) == 1 else raw  # GoEmotions stores a list of ids
        key = str(raw).strip()
        label = label_map.get(key, key if key in known else None)
        text = _str_or_none(row[text_field])
        if label is None or text is None:
            dropped += 1
            continue
        rows.append({"name": f"{prefix}-{i}", "label": label, "text": text, "reason": None, "caption": None})
    return datasets.Dataset.from_list(rows, features=_features()), dropped


def split_by_name(records, fraction: float) -> tuple[list[int], list[int]]:
    """Deterministic held-out split: a record goes to validation when the hash of its name falls below ``fraction``
    (independent of file order, so adding samples never moves old ones between splits)."""
    train, val = [], []
    for i, name in enumerate(list(records["name"])):
        h = int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "big") / 2**32
        (val if h < fraction else train).append(i)
    return train, val


# ============================================================================================== features


class FeatureSource(Protocol):
    """Features of one sample: ``load(name) -> {modality: (T, D) tensor or None}``."""

    def load(self, name: str) -> dict[str, Tensor | None]: ...


class FeatureFiles:
    """``<root>/<subdir>/<name>.npy`` per modality (``emollm.encoders.FeatureStore``), with a missing-file policy.

    Args:
        root: ``data.feature_root``.
        dirs: modality -> sub-folder.
        dims: modality -> feature width (checked on load).
        missing: ``drop_modality`` (the modality is absent for that sample), ``drop_sample`` (the caller filters it
            out with ``has_all``), or ``error``.
    """

    def __init__(self, root: str | Path, dirs: dict[str, str], dims: dict[str, int], missing: str = "drop_modality"):
        from emollm.encoders import FeatureStore

        self.stores = {m: FeatureStore(root, d, dims[m]) for m, d in dirs.items()}
        self.missing = missing

    def has_all(self, name: str) -> bool:
        return all(name in s for s in self.stores.values())

    def missing_counts(self, names: Sequence[str]) -> dict[str, int]:
        return {m: sum(n not in s for n in names) for m, s in self.stores.items()}

    def load(self, name: str) -> dict[str, Tensor | None]:
        out: dict[str, Tensor | None] = {}
        for m, store in self.stores.items():
            if name in store:
                out[m] = store.load(name)
            elif self.missing == "error":
                raise FileNotFoundError(
                    f"no {m} features for sample {name!r} in {store.dir}; set data.missing_features=drop_modality "
                    "to train without them"
                )
            else:
                out[m] = None
        return out


class InMemoryFeatures:
    """Features held in memory (synthetic data), keyed by sample name."""

    def __init__(self, table: dict[str, dict[str, Tensor | None]]):
        self.table = table

    def load(self, name: str) -> dict[str, Tensor | None]:
        return dict(self.table.get(name, {}))


class NoFeatures:
    """Text-only samples (auxiliary text-emotion data)."""

    def load(self, name: str) -> dict[str, Tensor | None]:
        return {}


_FILLER = ("and", "then", "she", "said", "that", "the", "voice", "was", "calm", "while", "he", "looked", "away")


def synthetic_records(cfg: DataConfig, feature_dims: dict[str, int], split: str):
    """A synthetic split (``train`` or ``val``) as ``(records, InMemoryFeatures)``; different splits never share
    samples. Targets: the label (emotion), a templated reason and caption."""
    import datasets

    from emollm.data.synthetic import SUBTITLES, SyntheticEmotionData

    s = cfg.synthetic
    gen = SyntheticEmotionData(feature_dims, labels=cfg.labels, noise=s.noise, seed=s.seed)
    n, split_seed = (s.num_train, 1) if split == "train" else (s.num_val, 2)
    rows, table = [], {}
    for i in range(n):
        sample, label = gen.sample(i, split_seed=split_seed, with_answer=False)
        content = sample.messages[0]["content"]
        text = next((t for t in SUBTITLES if f"says: {t}." in content), SUBTITLES[0])
        if s.subtitle_words:
            rnd = random.Random(f"filler:{split}:{i}")
            text += " " + " ".join(rnd.choice(_FILLER) for _ in range(s.subtitle_words))
        rows.append(
            {
                "name": sample.name,
                "label": label,
                "text": text,
                "reason": f"The face, the voice and the words all point to {label}. The person feels {label}.",
                "caption": f"A person speaks; the expression and the tone of voice look {label}.",
            }
        )
        table[sample.name] = dict(sample.features)
    return datasets.Dataset.from_list(rows, features=_features()), InMemoryFeatures(table)


# ============================================================================================== prompts


@dataclass
class TrainItem:
    """One conversation ready for the collator."""

    sample: Sample
    task: str
    label: str | None
    weight: float = 1.0


class PromptBuilder:
    """Record + features -> ``Sample`` under the config's task pool and templates (Emotion-LLaMA's layout:
    ``<media> The person in video says: {subtitle}. [{task}] {instruction}``)."""

    def __init__(self, cfg: DataConfig, modalities: Sequence[str]):
        self.cfg = cfg
        self.labels = list(cfg.labels)
        self.label_set = set(cfg.labels)
        self.media = "".join(MARKERS[m] for m in modalities)

    def targets(self, record: dict[str, Any]) -> dict[str, str]:
        """Task -> target text available for this record."""
        out = {}
        if record.get("label") in self.label_set:
            out["emotion"] = record["label"]
        if record.get("reason"):
            out["reason"] = record["reason"]
        if record.get("caption"):
            out["caption"] = record["caption"]
        return out

    def eligible(self, record: dict[str, Any], tasks: dict[str, float]) -> list[tuple[str, float]]:
        have = self.targets(record)
        return [(t, w) for t, w in tasks.items() if w > 0 and t in have]

    def label_list(self, rng: random.Random) -> list[str]:
        order = self.cfg.label_order
        if order == "alphabetical":
            return sorted(self.labels)
        if order == "shuffle":
            labels = list(self.labels)
            rng.shuffle(labels)
            return labels
        return list(self.labels)

    def build(
        self,
        record: dict[str, Any],
        features: dict[str, Tensor | None],
        task: str,
        rng: random.Random,
        *,
        with_answer: bool = True,
    ) -> Sample:
        cfg = self.cfg
        instruction = rng.choice(cfg.instructions[task]).format(labels=", ".join(self.label_list(rng)))
        text = (record.get("text") or "").strip().rstrip(".")
        subtitle = cfg.subtitle_template.format(text=text) if text else ""
        media = self.media if any(v is not None for v in features.values()) else ""
        user = cfg.prompt_template.format(media=media, subtitle=subtitle, task=task, instruction=instruction)
        user = re.sub(r"[ \t]{2,}", " ", user).strip()
        messages: list[dict[str, Any]] = []
        if cfg.system_prompt is not None:
            messages.append({"role": "system", "content": cfg.system_prompt})
        messages.append({"role": "user", "content": user})
        if with_answer:
            target = self.targets(record).get(task, "")
            answer = cfg.answers[task].format(label=record.get("label") or "", target=target)
            messages.append({"role": "assistant", "content": answer})
        return Sample(messages=messages, features={k: v for k, v in features.items()}, name=record["name"])


def _drop_modalities(features: dict[str, Tensor | None], p: float, rng: random.Random) -> dict[str, Tensor | None]:
    present = [m for m, v in features.items() if v is not None]
    if p <= 0 or len(present) < 2:
        return features
    keep = [m for m in present if rng.random() >= p]
    if not keep:
        keep = [rng.choice(present)]
    return {m: (v if m in keep else None) for m, v in features.items()}


def _pick_task(options: list[tuple[str, float]], rng: random.Random) -> str:
    total = sum(w for _, w in options)
    x = rng.random() * total
    for task, w in options:
        x -= w
        if x < 0:
            return task
    return options[-1][0]


@dataclass
class _Part:
    records: Any
    features: FeatureSource
    indices: list[int]


class InstructionDataset:
    """Map-style data set over one or more record sources (main data, then auxiliary text data).

    Item keys are ``(index, epoch)`` pairs (a bare ``index`` means epoch 0): the sample is a pure function of the key.
    ``index < len(main)`` addresses the main data; higher indices address the auxiliary pools in order
    (``pools()`` gives their ranges for the sampler).

    Args:
        parts: ``(records, features)`` per source; the first is the main data.
        builder: The prompt builder.
        tasks: Task pool with weights.
        seed: Seed of all per-sample choices.
        train: Training mode (modality dropout on; task drawn from the pool). In eval mode the RNG is the same for
            every epoch and there is no dropout.
        modality_dropout: Per-modality drop probability in training.
        balance_loss: Give each sample the inverse frequency of its label as loss weight.
        indices: Restrict the main data to these record indices (held-out split).
    """

    def __init__(
        self,
        parts: Sequence[tuple[Any, FeatureSource]],
        builder: PromptBuilder,
        *,
        tasks: dict[str, float],
        seed: int,
        train: bool,
        modality_dropout: float = 0.0,
        balance_loss: bool = False,
        indices: Sequence[int] | None = None,
        drop_sample_if: Any = None,
    ):
        self.builder = builder
        self.tasks = dict(tasks)
        self.seed = seed
        self.train = train
        self.modality_dropout = modality_dropout
        self.parts: list[_Part] = []
        self.skipped: dict[str, int] = {}
        for j, (records, features) in enumerate(parts):
            base = list(range(len(records))) if indices is None or j > 0 else list(indices)
            keep = []
            for i in base:
                rec = records[i]
                if not builder.eligible(rec, self.tasks):
                    self.skipped["no target for the task pool"] = self.skipped.get("no target for the task pool", 0) + 1
                elif drop_sample_if is not None and j == 0 and drop_sample_if(rec["name"]):
                    self.skipped["missing features"] = self.skipped.get("missing features", 0) + 1
                else:
                    keep.append(i)
            self.parts.append(_Part(records, features, keep))
        if not self.parts or not self.parts[0].indices:
            raise ValueError(
                "no usable training samples: every record lacks a target for the task pool "
                f"{sorted(self.tasks)} (labels must be in data.labels; reason/caption tasks need text targets)"
                + (f"; skipped: {self.skipped}" if self.skipped else "")
            )
        self.weights = self._label_weights() if balance_loss else None

    # ------------------------------------------------------------------ index space
    def __len__(self) -> int:
        return sum(len(p.indices) for p in self.parts)

    @property
    def num_main(self) -> int:
        return len(self.parts[0].indices)

    def pools(self) -> list[tuple[int, int]]:
        """``(offset, size)`` of each auxiliary pool in the index space."""
        out, offset = [], self.num_main
        for p in self.parts[1:]:
            out.append((offset, len(p.indices)))
            offset += len(p.indices)
        return out

    def _locate(self, index: int) -> tuple[_Part, int]:
        if index < 0:
            raise IndexError(index)
        for p in self.parts:
            if index < len(p.indices):
                return p, p.indices[index]
            index -= len(p.indices)
        raise IndexError(f"index out of range for a data set of {len(self)} samples")

    def record(self, index: int) -> dict[str, Any]:
        part, i = self._locate(index)
        return part.records[i]

    def labels(self) -> list[str | None]:
        """Label of every main-data sample, in index order."""
        col = list(self.parts[0].records["label"])
        return [col[i] for i in self.parts[0].indices]

    def lengths(self) -> list[int]:
        """Rough token count of every sample (text characters / 4 + instruction), for length grouping."""
        out = []
        for p in self.parts:
            cols = {c: list(p.records[c]) for c in ("text", "reason", "caption", "label")}
            for i in p.indices:
                target = max(len(cols["reason"][i] or ""), len(cols["caption"][i] or ""), len(cols["label"][i] or ""))
                out.append(32 + (len(cols["text"][i] or "") + target) // 4)
        return out

    def _label_weights(self) -> dict[str, float]:
        counts: dict[str, int] = {}
        for lab in self.labels():
            if lab is not None:
                counts[lab] = counts.get(lab, 0) + 1
        total = sum(counts.values())
        return {lab: total / (len(counts) * c) for lab, c in counts.items()}

    # ------------------------------------------------------------------ items
    def __getitem__(self, key: int | tuple[int, int]) -> TrainItem:
        index, epoch = (key, 0) if isinstance(key, int) else key
        part, i = self._locate(index)
        record = part.records[i]
        rng = sample_rng(self.seed, epoch if self.train else 0, index)
        task = _pick_task(self.builder.eligible(record, self.tasks), rng)
        features = part.features.load(record["name"])
        if self.train:
            features = _drop_modalities(features, self.modality_dropout, rng)
        sample = self.builder.build(record, features, task, rng)
        label = record.get("label")
        weight = self.weights.get(label, 1.0) if self.weights is not None else 1.0
        return TrainItem(sample=sample, task=task, label=label, weight=weight)


@dataclass
class StreamingInstructions:
    """A streamed data set (``datasets.IterableDataset``), sharded over processes, resumable by position.

    Each process reads its shard in a per-epoch shuffled order (``shuffle_buffer``); ``iterate(epoch, skip)``
    yields ``TrainItem`` objects, skipping the first ``skip`` of that epoch (resume).
    """

    records: Any
    features: FeatureSource
    builder: PromptBuilder
    tasks: dict[str, float]
    seed: int
    modality_dropout: float = 0.0
    shuffle_buffer: int = 10000
    rank: int = 0
    world_size: int = 1
    label_weights: dict[str, float] | None = None
    skipped: dict[str, int] = field(default_factory=dict)

    def iterate(self, epoch: int, skip: int = 0) -> Iterator[TrainItem]:
        from datasets.distributed import split_dataset_by_node

        ds = self.records.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
        if self.world_size > 1:
            ds = split_dataset_by_node(ds, rank=self.rank, world_size=self.world_size)
        ds.set_epoch(epoch)  # after the split, which starts a fresh copy
        position = -1
        for record in ds:
            options = self.builder.eligible(record, self.tasks)
            if not options:
                self.skipped["no target"] = self.skipped.get("no target", 0) + 1
                continue
            position += 1
            if position < skip:
                continue
            rng = sample_rng(self.seed, epoch, position * self.world_size + self.rank)
            task = _pick_task(options, rng)
            features = _drop_modalities(self.features.load(record["name"]), self.modality_dropout, rng)
            sample = self.builder.build(record, features, task, rng)
            label = record.get("label")
            weight = self.label_weights.get(label, 1.0) if self.label_weights else 1.0
            yield TrainItem(sample=sample, task=task, label=label, weight=weight)
