"""The label vocabulary of the field, in one place: label sets with their prompt orders, and answer parsing.

Label sets (:data:`LABEL_SETS`, :func:`label_set`) give each corpus' classes in their **canonical** order (the
order of the corpus' own files: DFEW's label ``i`` is ``DFEW_LABELS[i - 1]``) and the **prompt order** in which
Emotion-LLaMA's prompts list them. The two differ, and the prompt order changes prompts and measured accuracy, so
every command takes its order from here.

Answer parsing (:class:`LabelParser`): an answer is lower-cased and split into words (letters and digits;
everything else, including punctuation, hyphens and apostrophes, separates words). Each label, and each synonym of
it, matches whole words only, so ``unhappy`` never matches ``happy`` (it is a synonym of ``sad``). A label and its
synonyms count as one label. The answer is valid when it names exactly one distinct label; an answer that names
none or several is **invalid**: its label is ``None`` (scored as an always-wrong invalid prediction) and it is never
mapped to a class. The old Emotion-LLaMA script mapped such answers to ``neutral``, which inflates the neutral
class; we report them instead.

Negation is out of scope: ``"not happy"`` parses as ``happy``, and ``"happy, not sad"`` names two labels and is
invalid.

Example:
    >>> parser = LabelParser(["happy", "sad", "neutral"])
    >>> parser.parse("The emotion is joyful.").label
    'happy'
    >>> parser.parse("Happy or sad?").reason
    'several labels: happy, sad'
    >>> label_set("mer2023").prompt_order[:3]
    ('happy', 'sad', 'neutral')
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "DEFAULT_SYNONYMS",
    "DFEW_LABELS",
    "EMOTION_LLAMA_LABEL_ORDER",
    "FER2013_LABELS",
    "LABEL_SETS",
    "MER2023_LABELS",
    "MERR_LABELS",
    "LabelParser",
    "LabelSet",
    "ParseResult",
    "label_set",
]

MERR_LABELS: tuple[str, ...] = ("neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt")
"""MERR's nine labels in the order of its files (MER2023 TXT lists, ``pseu_emotion`` values)."""
EMOTION_LLAMA_LABEL_ORDER: tuple[str, ...] = (
    "happy", "sad", "neutral", "angry", "worried", "surprise", "fear", "contempt", "doubt",
)  # fmt: skip
"""The nine labels in the order of Emotion-LLaMA's ``emotion`` task prompt (REFERENCE.md §1.4). Its maintainer found
listing all nine better than six even on 6-class MER2023 (#66); a valid answer naming one of the extra labels is a
wrong prediction there, not an invalid one."""
MER2023_LABELS: tuple[str, ...] = ("neutral", "angry", "happy", "sad", "worried", "surprise")
"""MER2023's six discrete classes, in the challenge's order."""
DFEW_LABELS: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
"""DFEW's seven classes; the label ``i`` of a split CSV is ``DFEW_LABELS[i - 1]``. Also Emotion-LLaMA's DFEW
zero-shot prompt order."""
FER2013_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""FER2013's seven classes in the dataset's index order (the output order of FER2013-trained CNNs)."""


@dataclass(frozen=True)
class LabelSet:
    """A corpus' classes: their canonical order and the order prompts list them in.

    Attributes:
        name: Registry key (``merr``, ``mer2023``, ``dfew``, ``fer2013``).
        labels: The classes in the corpus' own order.
        prompt_order: The order a classification prompt lists (may hold more labels than ``labels``: Emotion-LLaMA
            lists all nine MERR labels for 6-class MER2023).
    """

    name: str
    labels: tuple[str, ...]
    prompt_order: tuple[str, ...]


LABEL_SETS: dict[str, LabelSet] = {
    "merr": LabelSet("merr", MERR_LABELS, EMOTION_LLAMA_LABEL_ORDER),
    "mer2023": LabelSet("mer2023", MER2023_LABELS, EMOTION_LLAMA_LABEL_ORDER),
    "dfew": LabelSet("dfew", DFEW_LABELS, DFEW_LABELS),
    "fer2013": LabelSet("fer2013", FER2013_LABELS, FER2013_LABELS),
}
"""Every label set the library knows, by name."""


def label_set(name: str) -> LabelSet:
    """The :class:`LabelSet` called ``name``.

    Raises:
        KeyError: Naming the known sets.
    """
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise KeyError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}") from None


# Surface form -> label. Covers the 9 Emotion-LLaMA/MERR labels (neutral, angry, happy, sad, worried, surprise, fear,
# contempt, doubt) and DFEW's 7 (adds disgust). Entries whose label is not in a parser's label set are ignored by that
# parser, so e.g. "scared" is invalid for MER2023's 6 classes instead of being forced onto a neighbouring class.
DEFAULT_SYNONYMS: dict[str, str] = {
    # happy
    "happiness": "happy",
    "happily": "happy",
    "joy": "happy",
    "joyful": "happy",
    "joyous": "happy",
    "glad": "happy",
    "cheerful": "happy",
    "delighted": "happy",
    "pleased": "happy",
    # sad
    "sadness": "sad",
    "sadly": "sad",
    "sorrow": "sad",
    "sorrowful": "sad",
    "unhappy": "sad",
    "unhappiness": "sad",
    "depressed": "sad",
    "grief": "sad",
    "grieving": "sad",
    "melancholy": "sad",
    # neutral
    "neutrality": "neutral",
    "calm": "neutral",
    "expressionless": "neutral",
    # angry
    "anger": "angry",
    "angrily": "angry",
    "mad": "angry",
    "furious": "angry",
    "fury": "angry",
    "rage": "angry",
    "enraged": "angry",
    "irritated": "angry",
    "annoyed": "angry",
    # surprise
    "surprised": "surprise",
    "surprising": "surprise",
    "astonished": "surprise",
    "astonishment": "surprise",
    "amazed": "surprise",
    "amazement": "surprise",
    "shocked": "surprise",
    "startled": "surprise",
    # fear
    "fearful": "fear",
    "scared": "fear",
    "afraid": "fear",
    "frightened": "fear",
    "terrified": "fear",
    "terror": "fear",
    # disgust
    "disgusted": "disgust",
    "disgusting": "disgust",
    "repulsed": "disgust",
    "revulsion": "disgust",
    # worried
    "worry": "worried",
    "worrying": "worried",
    "worries": "worried",
    "anxious": "worried",
    "anxiety": "worried",
    "nervous": "worried",
    "uneasy": "worried",
    # contempt
    "contemptuous": "contempt",
    "disdain": "contempt",
    "scorn": "contempt",
    # doubt
    "doubtful": "doubt",
    "doubting": "doubt",
    "skeptical": "doubt",
    "sceptical": "doubt",
    "suspicious": "doubt",
}

_WORD = re.compile(r"[^\W_]+")


def _words(text: str) -> tuple[str, ...]:
    """Lower-cased words of ``text``: runs of letters/digits; punctuation, ``_``, ``-`` and ``'`` separate them."""
    return tuple(_WORD.findall(text.lower()))


class ParseResult(NamedTuple):
    """The outcome of parsing one answer.

    Attributes:
        label: The single label the answer names, or ``None`` when it is invalid.
        candidates: The distinct labels found, in order of first mention (empty, one, or several).
        reason: ``"ok"``, ``"no label"`` (``"no label (empty answer)"`` for a blank one) or
            ``"several labels: a, b"``.
    """

    label: str | None
    candidates: tuple[str, ...]
    reason: str

    @property
    def valid(self) -> bool:
        """True when the answer names exactly one label."""
        return self.label is not None


class LabelParser:
    """Maps free-text model answers to one label of a closed label set.

    Args:
        labels: The label set, e.g. ``["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]``. Matching
            is case-insensitive; results use the spelling given here.
        synonyms: Surface form -> label. Defaults to :data:`DEFAULT_SYNONYMS`. Entries whose label is not in
            ``labels`` are ignored, so one table serves every label set; extend the default with
            ``{**DEFAULT_SYNONYMS, "elated": "happy"}``. A surface form may have several words.

    Raises:
        ValueError: If ``labels`` is empty, has duplicates (ignoring case), or a label or synonym has no word
            characters, or a synonym is spelled like a different label.
    """

    def __init__(self, labels: Sequence[str], synonyms: Mapping[str, str] | None = None) -> None:
        labels = [str(label) for label in labels]
        if not labels:
            raise ValueError("LabelParser needs at least one label")
        by_key: dict[str, str] = {}
        for label in labels:
            key = label.lower().strip()
            if key in by_key:
                raise ValueError(f"duplicate label {label!r} (labels are compared ignoring case): {labels}")
            if not _words(label):
                raise ValueError(f"label {label!r} has no letters or digits; use a word such as 'happy'")
            by_key[key] = label
        self.labels: tuple[str, ...] = tuple(labels)
        phrases: dict[tuple[str, ...], str] = {_words(label): label for label in labels}
        table = DEFAULT_SYNONYMS if synonyms is None else synonyms
        for surface, target in table.items():
            label = by_key.get(str(target).lower().strip())
            if label is None:
                continue  # synonym of a label outside this label set
            words = _words(str(surface))
            if not words:
                raise ValueError(f"synonym {surface!r} has no letters or digits; remove it from the synonym table")
            if phrases.get(words, label) != label:
                raise ValueError(
                    f"synonym {surface!r} -> {target!r} clashes with label {phrases[words]!r}; remove the synonym"
                )
            phrases[words] = label
        self._phrases = phrases
        self._max_len = max(len(words) for words in phrases)

    def parse(self, text: str | None) -> ParseResult:
        """Return the label named by ``text``, or an invalid result naming why.

        Args:
            text: The model's answer; ``None`` is treated as an empty answer.

        Returns:
            The :class:`ParseResult`. Its ``label`` is ``None`` unless exactly one distinct label is named.
        """
        words = _words(text or "")
        if not words:
            return ParseResult(None, (), "no label (empty answer)")
        found: list[str] = []
        i = 0
        while i < len(words):
            for n in range(min(self._max_len, len(words) - i), 0, -1):  # longest phrase first
                label = self._phrases.get(words[i : i + n])
                if label is not None:
                    if label not in found:
                        found.append(label)
                    i += n
                    break
            else:
                i += 1
        if not found:
            return ParseResult(None, (), "no label")
        if len(found) > 1:
            return ParseResult(None, tuple(found), "several labels: " + ", ".join(found))
        return ParseResult(found[0], (found[0],), "ok")

    __call__ = parse

    def parse_many(self, texts: Iterable[str | None]) -> list[ParseResult]:
        """Parse each answer of ``texts``."""
        return [self.parse(text) for text in texts]
