"""MER2026 / MER-UniBench scoring as the released evaluation computes it: emotion-wheel (EW) metrics for
open-vocabulary answers, the MER-UniBench hit rate, label extraction by an LLM judge, and MER-Prefer.

Sources (read in the released code, not copied): ``MERTools/MER2026/MER2026_Track2/my_affectgpt/evaluation/wheel.py``
(= ``AffectGPT/my_affectgpt/evaluation/wheel.py`` with zero guards), ``ew_metric.py``, ``toolkit/utils/qwen.py``,
``toolkit/utils/functions.py`` and ``MER2026_Track3/utils/common.py``.

**The wheels are not shipped.** The five emotion wheels, the synonym table and the word-form table
(``wheel1..5.xlsx``, ``synonym.xlsx``, ``format.csv`` in ``MER2026/MER2026_Track2/emotion_wheel/`` of MERTools) carry
no licence of their own (MERTools' MER2026 folder is CC BY-NC 4.0, AffectGPT's README says non-commercial use only),
so :func:`load_wheels` reads them from a folder the user supplies (``.xlsx`` as released, or ``.csv`` exports with the
same columns). :attr:`Wheels.source` records the folder and a digest of every file with each score.

How a word reaches a wheel (``func_backward_case3``), per wheel w and level (``level1`` is the official one):

1. ``format.csv`` maps a surface form to raw words (``happiness`` -> ``happy``); every ``name`` maps to itself. A
   word that is not a key is **dropped** (``neutral`` is not one, so it never counts).
2. The synonym table maps each raw word to the wheel words it is a synonym of, merged over its 8 GPT runs.
3. Of all those wheel words, sorted alphabetically, the first that wheel w knows gives its cluster: the level-1 word
   (``level1``) or the level-2 word (``level2``; a level-1 word maps to its alphabetically first child).

EW metric (``wheel_metric_calculation``): per wheel, gold and prediction become sets of clusters; a sample with an
empty gold set is skipped, an empty prediction scores P = R = 0, else P = |G∩P|/|P| and R = |G∩P|/|G|; P and R are
averaged over samples and F = 2PR/(P+R) of the averages (0 when both are 0); the result is the mean of (F, P, R) over
the five wheels. Hit rate (``hitrate_metric_calculation``, discrete data sets): the gold label's cluster set, samples
with an empty one skipped, hit = |P∩G| per sample, averaged, then over the wheels.

Label extraction: the released prompt (:data:`EXTRACTION_PROMPT`) asks a local LLM to list the emotions a free-text
description gives; the answer is cleaned (:func:`clean_judge_answer`) and split (:func:`string_to_list`). The
release ran Qwen2.5-7B-Instruct in vLLM with :data:`RELEASED_JUDGE_SETTINGS`; any local backbone can stand in, and the
settings and seed are stored with the score.

MER-Prefer (Track 3): responses are parsed to ``a1``/``a2``/``same`` (:func:`parse_preference`); the two-class score
drops gold ``same`` rows, counts a predicted ``same`` as ``a1`` and reports the weighted-average F1 and accuracy.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

__all__ = [
    "EXTRACTION_PROMPT",
    "LEVELS",
    "PREFERENCE_PROMPT",
    "RELEASED_JUDGE_SETTINGS",
    "SENTIMENTS",
    "SENTIMENT_PROMPT",
    "WHEELS",
    "Wheels",
    "clean_judge_answer",
    "ew_scores",
    "extract_openset",
    "hit_rate",
    "judge_in_batches",
    "load_wheels",
    "parse_preference",
    "parse_sentiment",
    "prefer_scores",
    "sentiment_scores",
    "read_name_column",
    "read_xlsx_rows",
    "string_to_list",
]

WHEELS: tuple[str, ...] = ("wheel1", "wheel2", "wheel3", "wheel4", "wheel5")
"""The five emotion wheels the official metric averages over."""
LEVELS: tuple[str, ...] = ("level1", "level2")
SYNONYM_RUNS: tuple[str, ...] = tuple(f"run{i}" for i in range(1, 9))

EXTRACTION_PROMPT = (
    "Please assume the role of an expert in the field of emotions. We provide clues that may be related to the "
    "emotions of the characters. Based on the provided clues, please identify the emotional states of the main "
    "character. The main character is the one with the most detailed clues. Please separate different emotional "
    "categories with commas and output only the clearly identifiable emotional categories in a list format. If none "
    "are identified, please output an empty list. Input: We cannot recognize his emotional state; Output: [] Input: "
    "His emotional state is happy, sad, and angry; Output: [happy, sad, angry] Input: {reason}; Output: "
)
"""The released description -> open-vocabulary-labels prompt (one line, ending with a space), as a user turn."""

_CONT = " " + " " * 12  # the release's prompt is an f-string continued with "\\" onto lines indented 12 spaces
SENTIMENT_PROMPT = _CONT.join(
    [
        "Please act as an expert in the field of emotions.",
        "We provide a few words to describe the emotions of a character.",
        "Please choose the most likely sentiment from the given candidates: [positive, negative, neutral]",
        "Please direct output answer without analyzing process.",
        "Input: [joyful]; Output: positive",
        "Input: []; Output: neutral",
        "Input: {reason}; Output: ",
    ]
)
"""MER-UniBench's open-vocabulary-labels -> sentiment prompt (``openset_to_sentiment_qwen``), character for character:
its source continues an f-string with a backslash onto lines indented 12 spaces, so 13 spaces join the sentences.
``{reason}`` is the extraction judge's cleaned answer (e.g. ``[happy, relieved]``)."""

SENTIMENTS = ("positive", "negative", "neutral")

RELEASED_JUDGE_SETTINGS: dict[str, Any] = {
    "model": "Qwen2.5-7B-Instruct",
    "engine": "vLLM 0.6",
    "do_sample": True,
    "temperature": 0.7,
    "top_p": 0.8,
    "repetition_penalty": 1.05,
    "max_new_tokens": 512,
    "batch_size": 8,
    "chat_template": "the model's own (Qwen2.5 inserts its default system message)",
}
"""What the release used for label extraction (``SamplingParams(temperature=0.7, top_p=0.8, repetition_penalty=1.05,
max_tokens=512)``, batches of 8, no system message)."""

PREFERENCE_PROMPT = (
    'We provide two descriptions for a given input: a1: "{a1}". a2: "{a2}". Please determinate which one is better '
    "aligned with the input content. If both of them equally align with the input content, please output 'same'. "
    "Therefore, the output should be a1, a2, or same. Please direct output the answer without additional reasoning "
    "process."
)
"""MER2026 Track 3's baseline prompt (its grammar is the original's)."""

_JUDGE_PREFIXES = ("输入", "输出", "翻译", "output", "Output", "input", "Input")


# ----------------------------------------------------------------------------------------------------- text helpers


def string_to_list(text: str | Sequence[str] | None) -> list[str]:
    """A list cell or answer -> items: one leading ``[`` and one trailing ``]`` removed, split on quotes and commas,
    items stripped, empty ones dropped (the release's ``string_to_list``). A list passes through."""
    if text is None:
        return []
    if not isinstance(text, str):
        return [str(x) for x in text]
    if text == "":
        return []
    if text.startswith("["):
        text = text[1:]
    if text.endswith("]"):
        text = text[:-1]
    return [item.strip() for item in re.split("['\",]", text) if item.strip() not in ("", ",")]


def clean_judge_answer(text: str) -> str:
    """The release's ``func_postprocess_qwen``: a leading ``Input``/``Output``/... word, then a leading ``:``, every
    newline and the surrounding whitespace removed."""
    for prefix in _JUDGE_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    text = text.strip()
    for colon in (":", "："):
        if text.startswith(colon):
            text = text[len(colon) :]
            break
    return text.replace("\n", "").strip()


def _words(items: Iterable[str]) -> list[str]:
    return [item.lower().strip() for item in items]


# ----------------------------------------------------------------------------------------------------- files


def read_xlsx_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of the first sheet of an ``.xlsx`` file as ``{header: cell text}`` (blank cells ``""``), without
    openpyxl: an ``.xlsx`` is a zip of XML parts (shared strings + worksheet cells addressed ``A1``, ``B7``...)."""
    ns = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
    rel_ns = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            shared: list[str] = []
            if "xl/sharedStrings.xml" in names:
                root = ElementTree.fromstring(zf.read("xl/sharedStrings.xml"))
                shared = ["".join(t.text or "" for t in si.iter(f"{{{ns['m']}}}t")) for si in root.findall("m:si", ns)]
            book = ElementTree.fromstring(zf.read("xl/workbook.xml"))
            first = book.find("m:sheets/m:sheet", ns)
            sheet_part = "xl/worksheets/sheet1.xml"
            if first is not None and "xl/_rels/workbook.xml.rels" in names:
                rels = ElementTree.fromstring(zf.read("xl/_rels/workbook.xml.rels"))
                target = {r.get("Id"): r.get("Target") for r in rels}.get(first.get(rel_ns))
                if target:
                    sheet_part = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
            sheet = ElementTree.fromstring(zf.read(sheet_part))
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError) as e:
        raise ValueError(
            f"{path}: not a readable .xlsx workbook ({e}); export it to .csv with the same columns"
        ) from None
    table: list[dict[int, str]] = []
    for row in sheet.iter(f"{{{ns['m']}}}row"):
        cells: dict[int, str] = {}
        for c in row.findall("m:c", ns):
            ref = re.match(r"([A-Z]+)", c.get("r", ""))
            if ref is None:
                continue
            col = 0
            for ch in ref.group(1):
                col = col * 26 + ord(ch) - 64
            kind, value = c.get("t"), c.find("m:v", ns)
            if kind == "s" and value is not None:
                text = shared[int(value.text or 0)]
            elif kind == "inlineStr":
                text = "".join(t.text or "" for t in c.iter(f"{{{ns['m']}}}t"))
            else:
                text = "" if value is None or value.text is None else value.text
            cells[col] = text
        table.append(cells)
    if not table:
        return []
    header = table[0]
    return [{name: r.get(col, "") for col, name in header.items()} for r in table[1:]]


def _read_table(folder: Path, stem: str, columns: Sequence[str]) -> list[dict[str, str]]:
    for suffix in (".xlsx", ".csv"):
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            if suffix == ".xlsx":
                rows = read_xlsx_rows(path)
            else:
                with path.open(encoding="utf-8-sig", newline="") as f:
                    rows = [{k: (v or "") for k, v in r.items()} for r in csv.DictReader(f)]
            missing = [c for c in columns if rows and c not in rows[0]]
            if missing or not rows:
                raise ValueError(f"{path}: expected columns {list(columns)} and at least one row; missing {missing}")
            return rows
    raise FileNotFoundError(
        f"{folder}: no {stem}.xlsx (or {stem}.csv); the emotion-wheel folder needs wheel1..5, synonym and format.csv "
        "from MERTools MER2026/MER2026_Track2/emotion_wheel (emollm does not ship them: non-commercial research "
        "material without a licence of its own)"
    )


def _digest(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix in (".xlsx", ".csv"):
            out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    return out


# ----------------------------------------------------------------------------------------------------- the wheels


@dataclass
class Wheels:
    """The maps the official metric uses, built from the wheel files.

    Attributes:
        labels: Every word of the five wheels (levels 1-3), lowercased (253 in the MER2026 files).
        raw_mapping: Word -> the wheel words it is a synonym of (merged over the 8 runs; 1255 keys).
        format_mapping: Surface form -> raw words (``format.csv``; 7356 keys with the MER2026 file).
        wheel_map: Wheel -> level -> word -> its cluster on that wheel.
        source: Folder and file digests, stored with every score.
    """

    labels: set[str]
    raw_mapping: dict[str, set[str]]
    format_mapping: dict[str, list[str]]
    wheel_map: dict[str, dict[str, dict[str, str]]]
    source: dict[str, Any] = field(default_factory=dict)

    def map_label(self, label: str, wheel: str, level: str = "level1") -> str:
        """One word -> its cluster on ``wheel`` at ``level``, or ``""`` when it cannot be mapped (dropped)."""
        if label not in self.format_mapping:
            return ""
        candidates = sorted(w for raw in self.format_mapping[label] for w in self.raw_mapping.get(raw, ()))
        clusters = self.wheel_map[wheel][level]
        for word in candidates:
            if word in clusters:
                return clusters[word]
        return ""

    def map_set(self, items: Iterable[str], wheel: str, level: str = "level1") -> set[str]:
        """Words (lowercased and stripped first) -> the set of their clusters; unmappable words dropped."""
        return {c for c in (self.map_label(w, wheel, level) for w in _words(items)) if c}


def _wheel_tree(rows: list[dict[str, str]], where: str) -> dict[str, dict[str, list[str]]]:
    """level1 -> level2 -> [level3 ...], blank cells taking the value above (the release's forward fill)."""
    tree: dict[str, dict[str, list[str]]] = {}
    l1 = l2 = l3 = ""
    for i, row in enumerate(rows, start=2):
        l1 = row["level1"].strip() or l1
        l2 = row["level2"].strip() or l2
        l3 = row["level3"].strip() or l3
        if not (l1 and l2 and l3):
            raise ValueError(f"{where} row {i}: level1/level2/level3 must be filled on the first row of each group")
        l1, l2, l3 = l1.lower(), l2.lower(), l3.lower()
        tree.setdefault(l1, {}).setdefault(l2, []).append(l3)
    return tree


def _clusters(tree: dict[str, dict[str, list[str]]], level: str) -> dict[str, str]:
    """``func_get_wheel_cluster``: every word of the wheel -> its level-1 word, or its level-2 word (a level-1 word:
    its alphabetically first child); later assignments win, in the file's order, as in the release."""
    out: dict[str, str] = {}
    for a, children in tree.items():
        out[a] = a if level == "level1" else sorted(children)[0]
        for b, leaves in children.items():
            out[b] = a if level == "level1" else b
            for c in leaves:
                out[c] = a if level == "level1" else b
    return out


def load_wheels(folder: str | Path) -> Wheels:
    """Read the emotion-wheel folder (``wheel1..5``, ``synonym`` as ``.xlsx`` or ``.csv``, ``format.csv``).

    Raises:
        FileNotFoundError: A file is missing; the message says where the official files are.
        ValueError: A file lacks its columns, or a synonym row names a word no wheel has.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"--wheels {folder}: not a folder; give the emotion_wheel folder of MERTools MER2026/MER2026_Track2 "
            "(wheel1..5.xlsx, synonym.xlsx, format.csv), which emollm does not ship"
        )
    trees = {w: _wheel_tree(_read_table(folder, w, ("level1", "level2", "level3")), str(folder / w)) for w in WHEELS}
    labels: set[str] = set()
    for tree in trees.values():
        for a, children in tree.items():
            labels.add(a)
            for b, leaves in children.items():
                labels.add(b)
                labels.update(leaves)
    columns = [c for run in SYNONYM_RUNS for c in (f"word_{run}", f"synonym_{run}")]
    raw: dict[str, set[str]] = {}
    for i, row in enumerate(_read_table(folder, "synonym", columns), start=2):
        for run in SYNONYM_RUNS:
            word = row[f"word_{run}"].strip().lower()
            if word not in labels:
                raise ValueError(f"{folder}/synonym row {i}: word_{run} {word!r} is on no wheel")
            raw.setdefault(word, set()).add(word)
            for syn in string_to_list(row[f"synonym_{run}"]):
                raw.setdefault(syn.strip().lower(), set()).add(word)
    fmt: dict[str, list[str]] = {}
    fmt_path = folder / "format.csv"
    if not fmt_path.is_file():
        raise FileNotFoundError(f"{fmt_path}: missing; it is the word-form table of the emotion-wheel folder")
    with fmt_path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"name", "format"} <= set(reader.fieldnames):
            raise ValueError(f"{fmt_path}: expected the columns name,format")
        for row in reader:
            name = row["name"]
            for form in string_to_list(row["format"] or ""):
                fmt.setdefault(form, []).append(name)
            fmt.setdefault(name, []).append(name)
    wheel_map = {w: {level: _clusters(trees[w], level) for level in LEVELS} for w in WHEELS}
    return Wheels(labels, raw, fmt, wheel_map, {"folder": str(folder.resolve()), "files": _digest(folder)})


# ----------------------------------------------------------------------------------------------------- metrics


def _names(gold: Mapping[str, Any], pred: Mapping[str, Any]) -> list[str]:
    extra = [n for n in pred if n not in gold]
    if extra:
        raise ValueError(f"{len(extra)} predicted name(s) are not in the gold set, e.g. {extra[:5]}")
    return list(gold)


def ew_scores(
    gold: Mapping[str, str | Sequence[str]],
    pred: Mapping[str, str | Sequence[str]],
    wheels: Wheels,
    *,
    level: str = "level1",
) -> dict[str, Any]:
    """The EW metric of open-vocabulary predictions (a missing prediction is an empty one).

    Args:
        gold: Name -> gold labels (a list, or a list cell such as ``"['happy', 'calm']"``).
        pred: Name -> predicted labels (same forms; the output of :func:`extract_openset` for descriptions).
        wheels: :func:`load_wheels`.
        level: ``level1`` (official) or ``level2``.

    Returns:
        ``{"f1", "precision", "recall"}`` (means over the wheels, as published; fractions), ``per_wheel``, ``n``
        (samples scored on each wheel), ``skipped`` (empty gold set per wheel) and ``missing`` (no prediction).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    names = _names(gold, pred)
    per_wheel: dict[str, dict[str, float | int]] = {}
    for w in WHEELS:
        ps, rs = [], []
        for n in names:
            g = wheels.map_set(string_to_list(gold[n]), w, level)
            if not g:
                continue
            p = wheels.map_set(string_to_list(pred.get(n)), w, level)
            hit = len(g & p)
            ps.append(hit / len(p) if p else 0.0)
            rs.append(hit / len(g) if p else 0.0)
        mp = sum(ps) / len(ps) if ps else 0.0
        mr = sum(rs) / len(rs) if rs else 0.0
        f = 0.0 if mp + mr == 0 else 2 * mp * mr / (mp + mr)
        per_wheel[w] = {"f1": f, "precision": mp, "recall": mr, "n": len(ps), "skipped": len(names) - len(ps)}
    mean = {k: sum(float(per_wheel[w][k]) for w in WHEELS) / len(WHEELS) for k in ("f1", "precision", "recall")}
    return {
        **mean,
        "level": level,
        "wheels": list(WHEELS),
        "per_wheel": per_wheel,
        "n_gold": len(names),
        "missing": sum(n not in pred for n in names),
        "wheel_source": wheels.source,
    }


def hit_rate(
    gold: Mapping[str, str],
    pred: Mapping[str, str | Sequence[str]],
    wheels: Wheels,
) -> dict[str, Any]:
    """MER-UniBench's hit rate for discrete data sets: per wheel (level 1), the gold label's cluster set (samples
    whose gold label maps to nothing, e.g. ``neutral``, are skipped) and hit = |P ∩ G|, averaged over samples, then
    the mean over the five wheels."""
    names = _names(gold, pred)
    per_wheel: dict[str, dict[str, float | int]] = {}
    for w in WHEELS:
        hits = []
        for n in names:
            g = wheels.map_set(string_to_list(gold[n]), w)
            if not g:
                continue
            hits.append(len(wheels.map_set(string_to_list(pred.get(n)), w) & g))
        per_wheel[w] = {"hit_rate": sum(hits) / len(hits) if hits else 0.0, "n": len(hits)}
    return {
        "hit_rate": sum(float(per_wheel[w]["hit_rate"]) for w in WHEELS) / len(WHEELS),
        "per_wheel": per_wheel,
        "n_gold": len(names),
        "missing": sum(n not in pred for n in names),
        "wheel_source": wheels.source,
    }


# ----------------------------------------------------------------------------------------------------- extraction


def judge_in_batches(
    prompts: Mapping[str, str],
    generate: Callable[[list[str]], list[str]],
    *,
    batch_size: int = 8,
    on_batch: Callable[[dict[str, str]], None] | None = None,
) -> dict[str, str]:
    """Name -> the judge's answer to that name's prompt, ``batch_size`` prompts per ``generate`` call (the release's
    batches), in the order of ``prompts``.

    Args:
        prompts: Name -> prompt (one user turn).
        generate: The judge: prompts -> answers, same length and order.
        batch_size: Prompts per call.
        on_batch: Called with each batch's answers (name -> answer) as it arrives (to checkpoint a long job).

    Raises:
        ValueError: The judge returned another number of answers than it was given prompts.
    """
    names = list(prompts)
    out: dict[str, str] = {}
    for start in range(0, len(names), batch_size):
        chunk = names[start : start + batch_size]
        answers = generate([prompts[n] for n in chunk])
        if len(answers) != len(chunk):
            raise ValueError(f"the judge returned {len(answers)} answers for {len(chunk)} prompts")
        batch = dict(zip(chunk, answers, strict=True))
        out.update(batch)
        if on_batch is not None:
            on_batch(batch)
    return out


def extract_openset(
    reasons: Mapping[str, str],
    generate: Callable[[list[str]], list[str]],
    *,
    batch_size: int = 8,
    on_batch: Callable[[dict[str, list[str]]], None] | None = None,
) -> dict[str, list[str]]:
    """Description -> open-vocabulary labels through a judge, as the release does: :data:`EXTRACTION_PROMPT` per
    description, ``generate`` answers a batch of prompts (one user turn each), answers cleaned and split, items
    lowercased.

    Args:
        reasons: Name -> free-text description (the model's answer).
        generate: The judge: prompts -> answers, same length and order.
        batch_size: Prompts per call (the release: 8).
        on_batch: Called with everything extracted so far after each batch (to checkpoint a long extraction).
    """
    out: dict[str, list[str]] = {}

    def parse(batch: dict[str, str]) -> None:
        out.update({n: _words(string_to_list(clean_judge_answer(a))) for n, a in batch.items()})
        if on_batch is not None:
            on_batch(out)

    prompts = {n: EXTRACTION_PROMPT.format(reason=r) for n, r in reasons.items()}
    judge_in_batches(prompts, generate, batch_size=batch_size, on_batch=parse)
    return out


# ----------------------------------------------------------------------------------------------------- MER-Prefer


def parse_preference(response: str | None) -> str:
    """``a1``, ``a2`` or ``same`` from a response: its lowercased start if it starts with one of them, else the one
    that occurs first, else ``same`` (``func_postprocess_preference``)."""
    text = (response or "").lower()
    for label in ("a1", "a2", "same"):
        if text.startswith(label):
            return label
    found = [(text.find(label), label) for label in ("a1", "a2", "same") if label in text]
    return min(found)[1] if found else "same"


def _weighted_f1(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[int]) -> float:
    total = len(y_true)
    score = 0.0
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(y_true, y_pred, strict=True))
        fp = sum(t != c and p == c for t, p in zip(y_true, y_pred, strict=True))
        fn = sum(t == c and p != c for t, p in zip(y_true, y_pred, strict=True))
        support = tp + fn
        f1 = 0.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
        score += f1 * support / total
    return score


def prefer_scores(gold: Mapping[str, str], pred: Mapping[str, str]) -> dict[str, Any]:
    """MER-Prefer two-class score: gold ``same`` rows dropped, predicted responses parsed by
    :func:`parse_preference` and ``same`` counted as ``a1``; weighted-average F1 (primary) and accuracy over
    a1 = 0, a2 = 1. A gold row without a prediction is parsed from an empty response (``same`` -> ``a1``).

    Raises:
        ValueError: A gold value other than a1/a2/same (the released test files hold the placeholder ``tie``), or a
            predicted name outside the gold set.
    """
    names = _names(gold, pred)
    bad = sorted({str(gold[n]) for n in names} - {"a1", "a2", "same"})
    if bad:
        raise ValueError(f"gold preferences must be a1, a2 or same, got {bad} (the public test files hide labels)")
    kept = [n for n in names if gold[n] != "same"]
    if not kept:
        raise ValueError("every gold preference is 'same'; the two-class score has no sample")
    index = {"a1": 0, "a2": 1}
    y_true = [index[gold[n]] for n in kept]
    parsed = [parse_preference(pred.get(n)) for n in kept]
    y_pred = [index["a1" if p == "same" else p] for p in parsed]
    accuracy = sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(kept)
    return {
        "weighted_f1": _weighted_f1(y_true, y_pred, (0, 1)),
        "accuracy": accuracy,
        "n": len(kept),
        "dropped_same": len(names) - len(kept),
        "pred_same": sum(p == "same" for p in parsed),
        "missing": sum(n not in pred for n in names),
    }


# ------------------------------------------------------------------------------------- sentiment (MER-UniBench)


def parse_sentiment(response: str | None) -> str | None:
    """``positive``/``negative``/``neutral`` when the cleaned answer (:func:`clean_judge_answer`) is exactly one of
    them, as the release compares it; anything else is invalid (None). The release maps an invalid answer to neutral and
    prints it; :func:`sentiment_scores` counts it apart."""
    text = clean_judge_answer(response or "")
    return text if text in SENTIMENTS else None


def sentiment_scores(gold: Mapping[str, float], pred: Mapping[str, str | None]) -> dict[str, Any]:
    """MER-UniBench's sentiment score of the dimensional sets (CMU-MOSI, CMU-MOSEI, SIMS, SIMS v2): samples whose gold
    score is 0 are dropped, the rest are two classes (gold > 0 against not), a prediction is positive when the judge
    answered ``positive``; weighted-average F1 (primary) and accuracy.

    Args:
        gold: Name -> gold sentiment score (a float; its sign is what counts).
        pred: Name -> parsed judge answer (:func:`parse_sentiment`; None = invalid). A missing name is invalid too.

    Returns:
        ``weighted_f1`` and ``accuracy`` with every invalid answer counted as wrong (emollm's rule), and the same as
        the release computes them (``as_released``: an invalid answer becomes neutral, i.e. not positive), with
        ``n``, ``dropped_zero``, ``invalid`` and ``missing``.

    Raises:
        ValueError: Every gold score is 0, or a predicted name is outside the gold set.
    """
    names = _names(gold, pred)
    kept = [n for n in names if float(gold[n]) != 0]
    if not kept:
        raise ValueError("every gold sentiment score is 0; the two-class score has no sample")
    y_true = [int(float(gold[n]) > 0) for n in kept]
    answers = [pred.get(n) for n in kept]
    released = [int(a == "positive") for a in answers]
    ours = [r if a is not None else 1 - t for a, r, t in zip(answers, released, y_true, strict=True)]

    def score(y_pred: list[int]) -> dict[str, float]:
        acc = sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(kept)
        return {"weighted_f1": _weighted_f1(y_true, y_pred, (0, 1)), "accuracy": acc}

    return {
        **score(ours),
        "as_released": score(released),
        "n": len(kept),
        "dropped_zero": len(names) - len(kept),
        "invalid": sum(a is None for a in answers),
        "missing": sum(n not in pred for n in kept),
    }


def read_name_column(path: str | Path, column: str) -> dict[str, str]:
    """``name -> column`` of a CSV (a ``names`` header is accepted for ``name``, as the MER files use). Leading
    lines starting with ``#`` (the provenance line of an extracted-labels file) are skipped."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    reader = csv.DictReader(io.StringIO("".join(lines)))
    fields = reader.fieldnames or []
    key = "name" if "name" in fields else "names" if "names" in fields else None
    if key is None or column not in fields:
        raise ValueError(f"{path}: expected the columns name,{column} (found {fields})")
    out: dict[str, str] = {}
    for i, row in enumerate(reader, start=2):
        name = (row[key] or "").strip()
        if not name:
            raise ValueError(f"{path}:{i}: empty name")
        if name in out:
            raise ValueError(f"{path}:{i}: name {name!r} appears twice")
        out[name] = row[column] or ""
    return out
