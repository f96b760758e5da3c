"""Open-vocabulary emotion sets: free text -> a set of emotion words, and set scores against a reference set.

An answer is lower-cased and split into words exactly as :class:`emollm.labels.LabelParser` does. Emotion words are
found through one table, :data:`OV_SYNONYMS` (surface form -> group head): the label synonyms of
:data:`emollm.labels.DEFAULT_SYNONYMS` (so ``joyful`` and ``happy`` are one group, headed ``happy``) extended with
open-vocabulary groups (``excited``/``excitement``, ``frustrated``/``frustration``, ...). A word missing from the
table is tried once more without a common inflection (``-s``, ``-ly``, ``-ed``, ``-ing``, ``-ness``, ...). Extending
the table here never changes ``LabelParser``, which keeps its own table.

Negation: a negation cue (``not``, ``no``, ``never``, ``without``, ``isn't``, ``neither ... nor``, ...) cancels the
emotion words of the next :data:`NEGATION_WINDOW` words in its clause (a clause ends at ``.,;:!?`` or ``but``), so
``"happy, not sad"`` is ``{happy}`` and ``"not very happy"`` is ``{}``.

Two readers: :func:`parse_emotions` keeps only words of the table (free text: ``"The man seems angry"`` ->
``{angry}``); :func:`normalize_set` reads a list whose items are emotion words by construction (MER-OV ``openset``
cells), so an item outside the table (``wistful``) is kept as its own group instead of being dropped.

Scores (REFERENCE.md §7.5-7.6): per sample ``precision = |P∩G|/|P|``, ``recall = |P∩G|/|G|`` (an empty P scores 0/0,
a sample with an empty G is skipped); :func:`ov_scores` averages them over samples and reports ``f1 = 2PR/(P+R)``
of the averages (the EW-F1 recipe), the per-sample F1 mean, MER2024-OV's ``mean(precision, recall)``, and the
MER-UniBench **hit rate** (a sample counts when ``P∩G`` is non-empty; for a single gold label: when the predicted set
contains it). Synonym grouping is by table, not by the GPT judge the official scripts use, so numbers are close to,
not equal to, the official ones.

Example:
    >>> sorted(parse_emotions("She is joyful and excited, not angry."))
    ['excited', 'happy']
    >>> set_scores({"happy", "excited"}, {"happy"})
    (0.5, 1.0, 0.6666666666666666)
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from emollm.labels import DEFAULT_SYNONYMS

__all__ = [
    "NEGATION_CUES",
    "NEGATION_WINDOW",
    "OV_SYNONYMS",
    "normalize_set",
    "ov_scores",
    "parse_emotions",
    "parse_openset_cell",
    "set_scores",
]

# Open-vocabulary groups beyond the classification labels: head -> other surface forms. Heads of the label groups
# are the labels themselves (from DEFAULT_SYNONYMS).
_OV_GROUPS: dict[str, tuple[str, ...]] = {
    "happy": ("contented", "contentment", "satisfied", "satisfaction", "elated", "elation", "cheerfulness"),
    "neutral": ("indifferent", "indifference", "composed"),
    "excited": ("excitement", "exciting", "thrilled", "enthusiastic", "enthusiasm", "eager", "eagerness"),
    "frustrated": ("frustration", "frustrating", "exasperated", "exasperation"),
    "disappointed": ("disappointment", "disappointing", "let down"),
    "confused": ("confusion", "puzzled", "perplexed", "bewildered", "baffled"),
    "embarrassed": ("embarrassment", "awkward", "awkwardness", "sheepish"),
    "ashamed": ("shame", "guilty", "guilt", "remorse", "remorseful", "regret", "regretful"),
    "helpless": ("helplessness", "powerless", "hopeless", "hopelessness", "despair", "desperate", "desperation"),
    "relaxed": ("relief", "relieved", "relaxation", "at ease", "serene", "serenity", "peaceful"),
    "proud": ("pride",),
    "grateful": ("gratitude", "thankful", "appreciative"),
    "love": ("loving", "affection", "affectionate", "tenderness"),
    "hopeful": ("hope", "optimistic", "optimism"),
    "lonely": ("loneliness", "isolated"),
    "jealous": ("jealousy", "envy", "envious"),
    "bored": ("boredom", "boring", "uninterested"),
    "tired": ("exhausted", "exhaustion", "weary", "weariness", "fatigue", "fatigued"),
    "curious": ("curiosity", "interested", "intrigued"),
    "determined": ("determination", "resolute"),
    "impatient": ("impatience",),
    "hurt": ("pain", "pained", "wounded"),
    "tense": ("tension", "stressed", "stress", "pressured", "restless"),
    "serious": ("solemn", "stern", "earnest"),
    "sarcastic": ("sarcasm", "mocking", "ironic", "irony"),
    "resentful": ("resentment", "bitter", "bitterness", "indignant", "indignation", "aggrieved"),
    "shy": ("shyness", "timid", "bashful"),
    "sympathetic": ("sympathy", "compassion", "compassionate", "pity", "empathy"),
    "amused": ("amusement", "playful", "funny"),
}


def _build_table() -> dict[str, str]:
    table = {label: label for label in set(DEFAULT_SYNONYMS.values())}
    table.update(DEFAULT_SYNONYMS)
    for head, forms in _OV_GROUPS.items():
        table.setdefault(head, head)
        for form in forms:
            table.setdefault(form, head)  # DEFAULT_SYNONYMS wins: the label parser's grouping stays the reference
    return table


OV_SYNONYMS: dict[str, str] = _build_table()
"""Surface form (possibly several words) -> group head: :data:`emollm.labels.DEFAULT_SYNONYMS` plus open-vocabulary
groups. Extend with ``{**OV_SYNONYMS, "wistful": "sad"}`` and pass it as ``synonyms``."""

NEGATION_CUES: frozenset[str] = frozenset(
    {
        "not", "no", "never", "without", "nor", "neither", "hardly", "barely", "none", "nothing", "lacks", "lacking",
        "cannot", "isn", "aren", "wasn", "weren", "don", "doesn", "didn", "won", "couldn", "wouldn", "shouldn",
        "hasn", "haven", "hadn", "nt",
    }
)  # fmt: skip
"""Words that negate the emotion words after them (``isn't`` splits into ``isn`` + ``t``)."""
NEGATION_WINDOW = 3
"""Words after a negation cue that it reaches (``not at all happy``)."""

_CLAUSE = re.compile(r"[.,;:!?\n]|\bbut\b|\bhowever\b|\byet\b", re.IGNORECASE)
_WORD = re.compile(r"[^\W_]+")  # the word rule of emollm.labels
_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("iness", "y"), ("ness", ""), ("ily", "y"), ("ly", ""), ("ied", "y"), ("ed", ""), ("ed", "e"), ("d", ""),
    ("ing", ""), ("ing", "e"), ("ies", "y"), ("es", ""), ("s", ""), ("ment", ""), ("ful", ""),
)  # fmt: skip


@lru_cache(maxsize=8)
def _compiled(items: tuple[tuple[str, str], ...]) -> tuple[dict[tuple[str, ...], str], int]:
    phrases = {tuple(_WORD.findall(k.lower())): v for k, v in items}
    phrases.pop((), None)
    return phrases, max((len(k) for k in phrases), default=1)


def _phrases(synonyms: Mapping[str, str] | None) -> tuple[dict[tuple[str, ...], str], int]:
    table = OV_SYNONYMS if synonyms is None else synonyms
    return _compiled(tuple(sorted(table.items())))


def _lemma(word: str, phrases: Mapping[tuple[str, ...], str]) -> str | None:
    """The head of ``word`` or of ``word`` without one common inflection; None if neither is in the table."""
    head = phrases.get((word,))
    if head is not None:
        return head
    for suffix, repl in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            head = phrases.get((word[: -len(suffix)] + repl,))
            if head is not None:
                return head
    return None


def _scan(text: str, phrases: Mapping[tuple[str, ...], str], max_len: int) -> tuple[list[str], bool]:
    """Emotion heads of ``text`` in order of mention (negated ones dropped), and whether a negation cue was seen."""
    found: list[str] = []
    negated_any = False
    for clause in _CLAUSE.split(text.lower()):
        words = _WORD.findall(clause)
        negate_until = -1
        i = 0
        while i < len(words):
            if words[i] in NEGATION_CUES:
                negate_until = i + NEGATION_WINDOW
                negated_any = True
                i += 1
                continue
            head, n = None, 1
            for m in range(min(max_len, len(words) - i), 1, -1):  # multi-word phrases first
                head = phrases.get(tuple(words[i : i + m]))
                if head is not None:
                    n = m
                    break
            if head is None:
                head = _lemma(words[i], phrases)
            if head is not None:
                if i <= negate_until:
                    negate_until = -1  # a cue negates one emotion ("no doubt he is happy"); "nor" is a cue again
                elif head not in found:
                    found.append(head)
            i += n
    return found, negated_any


def parse_emotions(text: str | None, synonyms: Mapping[str, str] | None = None) -> set[str]:
    """The emotion words of free text, grouped by synonym, negated mentions left out.

    Args:
        text: A model answer or description; None is empty.
        synonyms: Surface form -> group head; default :data:`OV_SYNONYMS`.

    Returns:
        The group heads named (and not negated) in ``text``.
    """
    phrases, max_len = _phrases(synonyms)
    return set(_scan(text or "", phrases, max_len)[0])


def normalize_set(words: Iterable[str], synonyms: Mapping[str, str] | None = None) -> set[str]:
    """Group a list of emotion words (a MER-OV ``openset``): each item's heads, or the item itself when it names no
    word of the table and is not negated (an open-vocabulary word the table lacks, e.g. ``wistful``).

    Args:
        words: The items.
        synonyms: Surface form -> group head; default :data:`OV_SYNONYMS`.
    """
    phrases, max_len = _phrases(synonyms)
    out: set[str] = set()
    for item in words:
        heads, negated = _scan(item, phrases, max_len)
        if heads:
            out.update(heads)
        elif not negated:
            key = " ".join(_WORD.findall(item.lower()))
            if key:
                out.add(key)
    return out


def parse_openset_cell(cell: str | None) -> list[str]:
    """The items of a MER-OV ``openset`` cell: a Python list literal (``"['happy', 'calm']"``, read with
    :func:`ast.literal_eval`, nothing executed) or a comma-separated string (``"happy, calm"``).

    Raises:
        ValueError: A cell that starts like a list but is not a list of strings.
    """
    text = (cell or "").strip()
    if not text:
        return []
    if text[0] in "[(":
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
        if not isinstance(value, (list, tuple)) or not all(isinstance(w, str) for w in value):
            raise ValueError(f"openset {text!r} is not a list of strings; write it like \"['happy', 'calm']\"")
        items = list(value)
    else:
        items = text.split(",")
    return [w.strip() for w in items if w.strip()]


def set_scores(pred: set[str], gold: set[str]) -> tuple[float, float, float]:
    """``(precision, recall, f1)`` of one predicted set against its reference; an empty prediction scores 0.

    Raises:
        ValueError: ``gold`` is empty (such samples are skipped by :func:`ov_scores`).
    """
    if not gold:
        raise ValueError("the reference set is empty")
    hit = len(pred & gold)
    if not pred or not hit:
        return 0.0, 0.0, 0.0
    p, r = hit / len(pred), hit / len(gold)
    return p, r, 2 * p * r / (p + r)


def ov_scores(preds: Sequence[set[str]], golds: Sequence[set[str]]) -> dict[str, float | int]:
    """Set metrics over samples (fractions in [0, 1]); samples with an empty reference are skipped.

    Returns:
        ``n`` (scored samples), ``skipped`` (empty reference), ``empty_pred``, ``precision``, ``recall`` (means over
        samples), ``f1`` (of those means), ``sample_f1`` (mean per-sample F1), ``mer_ov`` (mean of precision and
        recall, MER2024-OV's score) and ``hit_rate``.
    """
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} references")
    rows = [(set_scores(p, g), bool(p & g), not p) for p, g in zip(preds, golds, strict=True) if g]
    n = len(rows)
    if n == 0:
        return {"n": 0, "skipped": len(golds), "empty_pred": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0,
                "sample_f1": 0.0, "mer_ov": 0.0, "hit_rate": 0.0}  # fmt: skip
    precision = sum(s[0] for s, _, _ in rows) / n
    recall = sum(s[1] for s, _, _ in rows) / n
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "n": n,
        "skipped": len(golds) - n,
        "empty_pred": sum(e for _, _, e in rows),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "sample_f1": sum(s[2] for s, _, _ in rows) / n,
        "mer_ov": (precision + recall) / 2,
        "hit_rate": sum(h for _, h, _ in rows) / n,
    }
