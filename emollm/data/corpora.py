"""Readers for the emotion corpora that classic fusion baselines are measured on, over a user's local copy.

Nothing is downloaded: every reader walks a folder the user already has and gives one record shape for all
corpora, :class:`CorpusRecord` ``(name, path, label, speaker, extra)``, plus the files it could not read
(:attr:`CorpusListing.skipped`, each with its reason) so that nothing is dropped silently. ``strict=True`` refuses
the first malformed file instead, with :class:`CorpusFormatError` naming it.

Labels are mapped to the project's words (``happy``, ``sad``, ``angry``, ``fear``, ``surprise``, ``disgust``,
``neutral``; corpus-specific classes keep their own word: RAVDESS ``calm``, IEMOCAP ``frustrated``/``excited``/…);
the corpus' own code is kept in ``extra["raw_label"]``.

================  =========================================================================================
corpus            what the reader expects under ``ROOT`` (any depth unless said otherwise)
================  =========================================================================================
``ravdess``       ``03-01-05-01-02-01-12.wav`` (modality-channel-emotion-intensity-statement-repetition-actor),
                  ``.wav`` or ``.mp4``; speaker ``actor12``; odd actors male, even female
``crema-d``       ``1001_DFA_ANG_XX.wav`` (actor_sentence_emotion_level) in ``AudioWAV/``, ``VideoFlash/``, …;
                  one record per clip (the ``.wav`` first; the other files in ``extra["other_paths"]``);
                  ``VideoDemographics.csv`` (if present) adds ``sex``/``age``
``iemocap``       ``Session{1..5}/dialog/EmoEvaluation/*.txt`` lines ``[START - END]<TAB>TURN<TAB>EMO<TAB>[V, A, D]``;
                  wav ``Session{n}/sentences/wav/<dialog>/<turn>.wav`` (``path`` is None when it is absent)
``meld``          ``{train,dev,test}_sent_emo.csv`` (``Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,
                  Utterance_ID,…``); clip ``dia{D}_utt{U}.mp4`` searched below ``ROOT``; names are
                  ``<split>_dia{D}_utt{U}`` because MELD reuses ``dia0_utt0`` in every split
``mer2023``       ``train-label.csv`` (or any ``*label*.csv``) with ``name,discrete[,valence]``; no speaker ids
``dfew``          ``EmoLabel_DataSplit/{train,test}(single-labeled)/set_{1..5}.csv`` (``video_name,label``); no
                  speaker ids; the five published folds come with it
``merr``          a MERR/MER2023 label list TXT (``N [C] E [V]``; ``ROOT`` is the file or a folder of them)
================  =========================================================================================

Speakers. IEMOCAP's turn ``Ses01F_impro01_M013`` is spoken by the *male* actor of session 1: the dialog name's
letter (``Ses01F``) says who wore the motion-capture markers, the turn's letter (``M013``) who speaks, so the
speaker is session + the turn's gender (``Ses01M``); ten speakers in all. MER2023, DFEW and MERR publish no speaker
ids: their records use the clip name as the speaker (``extra["speaker_known"] = False``), so a "speaker" split of
them is a clip split and cannot promise speaker independence; :func:`emollm.data.splits.speaker_folds` says so.

Example:
    >>> from emollm.data.corpora import parse_ravdess_name
    >>> r = parse_ravdess_name("03-01-05-02-02-01-12")
    >>> r["label"], r["speaker"], r["extra"]["intensity"], r["extra"]["gender"]
    ('angry', 'actor12', 'strong', 'female')
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from emollm.data.splits import Fold

__all__ = [
    "CORPORA",
    "CorpusFormatError",
    "CorpusListing",
    "CorpusRecord",
    "CorpusSpec",
    "Skipped",
    "corpus_folds",
    "get_corpus",
    "list_corpora",
    "parse_crema_d_name",
    "parse_iemocap_line",
    "parse_ravdess_name",
    "read_corpus",
]

MEDIA_SUFFIXES = (".wav", ".mp4", ".avi", ".flv", ".mp3", ".mkv", ".mov", ".webm", ".flac", ".m4a")


class CorpusFormatError(ValueError):
    """A file of a corpus does not follow the corpus' naming scheme or format (the message names the file)."""


@dataclass(frozen=True)
class CorpusRecord:
    """One clip of a corpus.

    Attributes:
        name: The clip's id, unique within the listing (the file stem; the feature cache's ``<name>.npy``).
        path: The media file, or None when the corpus lists the clip but its media is not in the local copy.
        label: The emotion in the project's words (``extra["raw_label"]`` keeps the corpus' code).
        speaker: Who speaks, unique within the corpus (the clip name where the corpus has no speaker ids).
        extra: Corpus-specific fields (intensity, gender, session, sentence, valence/arousal, transcript ``text``…).
    """

    name: str
    path: str | None
    label: str
    speaker: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Skipped:
    """A file (or line) the reader could not turn into a record, and why."""

    path: str
    reason: str


@dataclass
class CorpusListing:
    """What a reader found: the records, and everything it skipped with the reason."""

    corpus: str
    root: str
    records: list[CorpusRecord]
    skipped: list[Skipped] = field(default_factory=list)
    filtered: Counter = field(default_factory=Counter)
    """Records left out on purpose (``label not in classes=4``) by reason; not errors."""

    def label_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r.label for r in self.records).items()))

    def speakers(self) -> list[str]:
        return sorted({r.speaker for r in self.records})

    def summary(self) -> str:
        """One paragraph: counts, and the unparseable files (up to 10 named)."""
        lines = [
            f"{self.corpus}: {len(self.records)} clips, {len(self.speakers())} speakers, labels "
            + ", ".join(f"{k} {v}" for k, v in self.label_counts().items())
        ]
        if self.filtered:
            lines.append("left out on purpose: " + ", ".join(f"{k} ({v})" for k, v in sorted(self.filtered.items())))
        missing = sum(1 for r in self.records if r.path is None)
        if missing:
            lines.append(f"{missing} listed clips have no media file in {self.root} (path null)")
        if self.skipped:
            lines.append(f"could not parse {len(self.skipped)} files (not in the listing):")
            lines += [f"  {s.path}: {s.reason}" for s in self.skipped[:10]]
            if len(self.skipped) > 10:
                lines.append(f"  ... and {len(self.skipped) - 10} more (--json lists all)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "corpus": self.corpus,
            "root": self.root,
            "records": [r.to_dict() for r in self.records],
            "skipped": [asdict(s) for s in self.skipped],
            "filtered": dict(self.filtered),
            "labels": self.label_counts(),
        }


class _Collector:
    """Collects records and skipped files; raises at the first problem when strict."""

    def __init__(self, corpus: str, root: Path, strict: bool):
        self.corpus, self.root, self.strict = corpus, root, strict
        self.records: list[CorpusRecord] = []
        self.skipped: list[Skipped] = []
        self.filtered: Counter = Counter()
        self._names: dict[str, str] = {}

    def skip(self, path: str | Path, reason: str) -> None:
        if self.strict:
            raise CorpusFormatError(f"{path}: {reason}")
        self.skipped.append(Skipped(str(path), reason))

    def add(self, record: CorpusRecord, where: str | Path) -> None:
        problem = _media_problem(Path(record.path)) if record.path else None
        if problem:
            self.skip(record.path, problem)
            return
        if record.name in self._names:
            self.skip(where, f"duplicate clip name {record.name!r} (first in {self._names[record.name]})")
            return
        self._names[record.name] = str(where)
        self.records.append(record)

    def listing(self) -> CorpusListing:
        records = sorted(self.records, key=lambda r: r.name)
        return CorpusListing(self.corpus, str(self.root), records, self.skipped, self.filtered)


_MAGIC: dict[str, Callable[[bytes], bool]] = {
    ".wav": lambda h: h[:4] in (b"RIFF", b"RIFX", b"RF64") and h[8:12] == b"WAVE",
    ".flac": lambda h: h[:4] == b"fLaC",
    ".mp4": lambda h: h[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"),
    ".m4a": lambda h: h[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"),
    ".mov": lambda h: h[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"),
    ".mkv": lambda h: h[:4] == b"\x1a\x45\xdf\xa3",
    ".webm": lambda h: h[:4] == b"\x1a\x45\xdf\xa3",
    ".avi": lambda h: h[:4] == b"RIFF" and h[8:12] == b"AVI ",
    ".flv": lambda h: h[:3] == b"FLV",
}


def _media_problem(path: Path) -> str | None:
    """Why a clip's file cannot be a clip (empty, unreadable, or not the format its name says), from its first bytes;
    None when it looks right. Decoding is left to the users of the listing; this only keeps obvious non-clips out."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except IsADirectoryError:
        return "a folder named like a clip"
    except OSError as e:
        return f"cannot read it ({e.strerror or e})"
    if not head:
        return "empty file (0 bytes): an interrupted copy? copy it again"
    check = _MAGIC.get(path.suffix.lower())
    if check is not None and len(head) == 12 and not check(head):
        return f"not a {path.suffix.lower()[1:].upper()} file (it starts with {head[:8]!r}): a renamed or damaged file?"
    if len(head) < 12 and check is not None:
        return f"{len(head)} bytes: too short for a {path.suffix.lower()[1:].upper()} file; copy it again"
    return None


def _media_files(root: Path) -> Iterator[Path]:
    """Media files under ``root`` in sorted order; hidden files and folders (``.DS_Store``, ``._x.wav``) skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and f.lower().endswith(MEDIA_SUFFIXES):
                yield Path(dirpath) / f


# ----------------------------------------------------------------------------------------------------------- RAVDESS

RAVDESS_EMOTIONS = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fear", "07": "disgust", "08": "surprise",
}  # fmt: skip
_RAVDESS_MODALITY = {"01": "audio-video", "02": "video-only", "03": "audio-only"}
_RAVDESS_CHANNEL = {"01": "speech", "02": "song"}
_RAVDESS_INTENSITY = {"01": "normal", "02": "strong"}
_RAVDESS_STATEMENT = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
_RAVDESS_RE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def parse_ravdess_name(stem: str) -> dict[str, Any]:
    """Fields of a RAVDESS file stem ``MM-CC-EE-II-SS-RR-AA``.

    Raises:
        CorpusFormatError: Not seven two-digit fields, or a code out of range (the message names the field).
    """
    m = _RAVDESS_RE.match(stem)
    if not m:
        raise CorpusFormatError(
            f"{stem!r} is not a RAVDESS name: expected seven two-digit fields "
            "modality-channel-emotion-intensity-statement-repetition-actor, e.g. 03-01-05-01-02-01-12"
        )
    mod, chan, emo, inten, stmt, rep, actor = m.groups()
    checks = [
        ("modality", mod, _RAVDESS_MODALITY),
        ("vocal channel", chan, _RAVDESS_CHANNEL),
        ("emotion", emo, RAVDESS_EMOTIONS),
        ("intensity", inten, _RAVDESS_INTENSITY),
        ("statement", stmt, _RAVDESS_STATEMENT),
    ]
    for what, code, table in checks:
        if code not in table:
            raise CorpusFormatError(f"{stem!r}: {what} code {code} is not one of {', '.join(table)}")
    if rep not in ("01", "02"):
        raise CorpusFormatError(f"{stem!r}: repetition code {rep} is not 01 or 02")
    if not 1 <= int(actor) <= 24:
        raise CorpusFormatError(f"{stem!r}: actor {actor} is not in 01-24")
    if emo == "01" and inten == "02":
        raise CorpusFormatError(f"{stem!r}: RAVDESS has no strong intensity for neutral (emotion 01, intensity 02)")
    return {
        "label": RAVDESS_EMOTIONS[emo],
        "speaker": f"actor{actor}",
        "extra": {
            "raw_label": emo,
            "modality": _RAVDESS_MODALITY[mod],
            "channel": _RAVDESS_CHANNEL[chan],
            "intensity": _RAVDESS_INTENSITY[inten],
            "statement": int(stmt),
            "repetition": int(rep),
            "actor": int(actor),
            "gender": "male" if int(actor) % 2 else "female",
        },
    }


def _read_ravdess(c: _Collector, **options: Any) -> None:
    _no_options("ravdess", options)
    for path in _media_files(c.root):
        try:
            fields = parse_ravdess_name(path.stem)
        except CorpusFormatError as e:
            c.skip(path, str(e))
            continue
        c.add(CorpusRecord(path.stem, str(path), fields["label"], fields["speaker"], fields["extra"]), path)


# ----------------------------------------------------------------------------------------------------------- CREMA-D

CREMA_D_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
_CREMA_D_LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
CREMA_D_SENTENCES = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened", "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about", "TAI": "The airplane is almost full", "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock", "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket", "ITS": "I think I've seen this before", "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}  # fmt: skip
_CREMA_D_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
_CREMA_D_PREFERENCE = (".wav", ".mp4", ".flv", ".mp3")


def parse_crema_d_name(stem: str) -> dict[str, Any]:
    """Fields of a CREMA-D file stem ``AAAA_SSS_EEE_LL`` (actor 1001-1091, sentence, emotion, level).

    Raises:
        CorpusFormatError: The stem does not follow the scheme (the message names the field).
    """
    m = _CREMA_D_RE.match(stem)
    if not m:
        raise CorpusFormatError(
            f"{stem!r} is not a CREMA-D name: expected ACTOR_SENTENCE_EMOTION_LEVEL, e.g. 1001_DFA_ANG_XX"
        )
    actor, sentence, emo, level = m.groups()
    if not 1001 <= int(actor) <= 1091:
        raise CorpusFormatError(f"{stem!r}: actor {actor} is not in 1001-1091")
    if sentence not in CREMA_D_SENTENCES:
        raise CorpusFormatError(f"{stem!r}: sentence code {sentence} is not one of {', '.join(CREMA_D_SENTENCES)}")
    if emo not in CREMA_D_EMOTIONS:
        raise CorpusFormatError(f"{stem!r}: emotion code {emo} is not one of {', '.join(CREMA_D_EMOTIONS)}")
    if level not in _CREMA_D_LEVELS:
        raise CorpusFormatError(f"{stem!r}: level {level} is not one of {', '.join(_CREMA_D_LEVELS)}")
    return {
        "label": CREMA_D_EMOTIONS[emo],
        "speaker": actor,
        "extra": {"raw_label": emo, "sentence": sentence, "level": _CREMA_D_LEVELS[level], "actor": int(actor)},
    }


def _crema_d_demographics(root: Path) -> dict[str, dict[str, Any]]:
    found = sorted(root.rglob("VideoDemographics.csv"))
    if not found:
        return {}
    out = {}
    with open(found[0], newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            actor = (row.get("ActorID") or "").strip()
            if actor:
                out[actor] = {
                    "sex": (row.get("Sex") or "").strip().lower() or None,
                    "age": _int_or_none(row.get("Age")),
                }
    return out


def _read_crema_d(c: _Collector, **options: Any) -> None:
    _no_options("crema-d", options)
    demographics = _crema_d_demographics(c.root)
    by_stem: dict[str, list[Path]] = {}
    for path in _media_files(c.root):
        by_stem.setdefault(path.stem, []).append(path)
    for stem, paths in sorted(by_stem.items()):
        paths.sort(key=lambda p: (_rank(p.suffix.lower(), _CREMA_D_PREFERENCE), str(p)))
        try:
            fields = parse_crema_d_name(stem)
        except CorpusFormatError as e:
            c.skip(paths[0], str(e))
            continue
        extra = {**fields["extra"], **demographics.get(fields["speaker"], {})}
        if len(paths) > 1:
            extra["other_paths"] = [str(p) for p in paths[1:]]
        c.add(CorpusRecord(stem, str(paths[0]), fields["label"], fields["speaker"], extra), paths[0])


# ----------------------------------------------------------------------------------------------------------- IEMOCAP

IEMOCAP_EMOTIONS = {
    "neu": "neutral", "hap": "happy", "exc": "excited", "sad": "sad", "ang": "angry", "fru": "frustrated",
    "sur": "surprise", "fea": "fear", "dis": "disgust", "oth": "other", "xxx": "undecided",
}  # fmt: skip
IEMOCAP_CLASS_SETS: dict[str, dict[str, str]] = {
    "all": IEMOCAP_EMOTIONS,
    # The usual 4-way protocol: happy and excited merged; the rest left out.
    "4": {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry"},
    # MERBench's 6-way: happy, sad, neutral, angry, excited, frustrated.
    "6": {"neu": "neutral", "hap": "happy", "exc": "excited", "sad": "sad", "ang": "angry", "fru": "frustrated"},
}
_IEMOCAP_LINE = re.compile(
    r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*\]\s*$"
)
_IEMOCAP_TURN = re.compile(r"^(Ses0([1-5])[FM])_(.+)_([FM])(\d{3})$")


def parse_iemocap_line(line: str) -> dict[str, Any]:
    """Fields of one EmoEvaluation summary line ``[START - END]<TAB>TURN<TAB>EMO<TAB>[V, A, D]``.

    Raises:
        CorpusFormatError: The line or its turn name does not follow the scheme.
    """
    m = _IEMOCAP_LINE.match(line.strip())
    if not m:
        raise CorpusFormatError(
            f"line {line.strip()!r} is not an EmoEvaluation summary line: expected "
            "'[START - END]<TAB>TURN<TAB>EMOTION<TAB>[V, A, D]'"
        )
    start, end, turn, emo, v, a, d = m.groups()
    t = _IEMOCAP_TURN.match(turn)
    if not t:
        raise CorpusFormatError(f"turn name {turn!r} is not SesNNX_<dialog>_XNNN (e.g. Ses01F_impro01_F000)")
    if emo not in IEMOCAP_EMOTIONS:
        raise CorpusFormatError(f"turn {turn}: emotion {emo!r} is not one of {', '.join(IEMOCAP_EMOTIONS)}")
    dialog_prefix, session, rest, gender, _ = t.groups()
    dialog = turn.rsplit("_", 1)[0]
    return {
        "name": turn,
        "raw_label": emo,
        "speaker": f"Ses0{session}{gender}",
        "extra": {
            "raw_label": emo,
            "session": int(session),
            "dialog": dialog,
            "gender": "female" if gender == "F" else "male",
            "improvised": rest.startswith("impro"),
            "start": float(start),
            "end": float(end),
            "valence": float(v),
            "activation": float(a),
            "dominance": float(d),
        },
    }


def _read_iemocap(c: _Collector, classes: str = "all", **options: Any) -> None:
    _no_options("iemocap", options)
    if classes not in IEMOCAP_CLASS_SETS:
        raise ValueError(f"iemocap: classes={classes!r} is not one of {', '.join(IEMOCAP_CLASS_SETS)}")
    table = IEMOCAP_CLASS_SETS[classes]
    files = sorted(p for p in c.root.rglob("*.txt") if p.parent.name == "EmoEvaluation" and not p.name.startswith("."))
    if not files:
        c.skip(c.root, "no Session*/dialog/EmoEvaluation/*.txt files below this folder; is it the IEMOCAP root?")
        return
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.startswith("["):  # headers (%), per-annotator lines (C-E1:, A-E2:), blanks
                    continue
                try:
                    fields = parse_iemocap_line(raw)
                except CorpusFormatError as e:
                    c.skip(f"{path}:{lineno}", str(e))
                    continue
                raw_label = fields["raw_label"]
                if raw_label not in table:
                    c.filtered[f"{IEMOCAP_EMOTIONS[raw_label]} not in classes={classes}"] += 1
                    continue
                extra = fields["extra"]
                session_dir = _session_dir(path)
                wav = session_dir / "sentences" / "wav" / extra["dialog"] / f"{fields['name']}.wav"
                record = CorpusRecord(
                    fields["name"], str(wav) if wav.is_file() else None, table[raw_label], fields["speaker"], extra
                )
                c.add(record, f"{path}:{lineno}")


def _session_dir(emo_file: Path) -> Path:
    # Session1/dialog/EmoEvaluation/Ses01F_impro01.txt -> Session1
    return emo_file.parent.parent.parent


# -------------------------------------------------------------------------------------------------------------- MELD

MELD_EMOTIONS = {
    "neutral": "neutral", "joy": "happy", "sadness": "sad", "anger": "angry",
    "surprise": "surprise", "fear": "fear", "disgust": "disgust",
}  # fmt: skip
_MELD_SPLITS = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
_MELD_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:  # MELD's CSVs hold a few cp1252 quotes
        return data.decode("cp1252", errors="replace")


def _read_meld(c: _Collector, **options: Any) -> None:
    _no_options("meld", options)
    clips: dict[str, list[Path]] = {}
    for p in _media_files(c.root):
        clips.setdefault(p.stem, []).append(p)
    found_any = False
    for split, filename in _MELD_SPLITS.items():
        csvs = sorted(c.root.rglob(filename))
        if not csvs:
            continue
        found_any = True
        path = csvs[0]
        reader = csv.DictReader(_read_text(path).splitlines())
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        lacking = [col for col in _MELD_COLUMNS if col not in header]
        if lacking:
            c.skip(path, f"header lacks {', '.join(lacking)}; expected MELD's Sr No.,Utterance,Speaker,Emotion,...")
            continue
        for lineno, row in enumerate(reader, start=2):
            where = f"{path}:{lineno}"
            emo = (row.get("Emotion") or "").strip().lower()
            dia, utt = (row.get("Dialogue_ID") or "").strip(), (row.get("Utterance_ID") or "").strip()
            if not dia.isdigit() or not utt.isdigit():
                c.skip(where, f"Dialogue_ID {dia!r} / Utterance_ID {utt!r} are not integers")
                continue
            if emo not in MELD_EMOTIONS:
                c.skip(where, f"emotion {emo!r} is not one of {', '.join(MELD_EMOTIONS)}")
                continue
            stem = f"dia{int(dia)}_utt{int(utt)}"
            media = _meld_clip(clips.get(stem, []), split)
            speaker = (row.get("Speaker") or "").strip()
            if not speaker:
                c.skip(where, "empty Speaker")
                continue
            extra = {
                "raw_label": emo,
                "split": split,
                "stem": stem,
                "dialogue": int(dia),
                "utterance": int(utt),
                "sentiment": (row.get("Sentiment") or "").strip() or None,
                "text": row.get("Utterance") or "",
            }
            c.add(CorpusRecord(f"{split}_{stem}", media, MELD_EMOTIONS[emo], speaker, extra), where)
    if not found_any:
        c.skip(c.root, f"none of {', '.join(_MELD_SPLITS.values())} below this folder; is it the MELD root?")


_MELD_DIR_HINT = {"train": "train", "dev": "dev", "test": "test"}


def _meld_clip(paths: list[Path], split: str) -> str | None:
    # The release puts each split's clips in its own folder (train_splits/, dev_splits_complete/,
    # output_repeated_splits_test/); pick the file whose folder names the split.
    for p in paths:
        if _MELD_DIR_HINT[split] in p.parent.name.lower():
            return str(p)
    return None


# ------------------------------------------------------------------------------- MER2023 / DFEW / MERR (adapters)


def _read_mer2023(c: _Collector, **options: Any) -> None:
    _no_options("mer2023", options)
    files = [c.root] if c.root.is_file() else sorted(c.root.rglob("*label*.csv"))
    if not files:
        c.skip(c.root, "no train-label.csv (or other *label*.csv with name,discrete) below this folder")
        return
    videos = {p.stem: p for p in _media_files(c.root)} if c.root.is_dir() else {}
    for path in files:
        reader = csv.DictReader(_read_text(path).splitlines())
        if not {"name", "discrete"} <= set(reader.fieldnames or []):
            c.skip(path, f"header {reader.fieldnames} lacks name,discrete")
            continue
        for lineno, row in enumerate(reader, start=2):
            name, label = (row["name"] or "").strip(), (row["discrete"] or "").strip().lower()
            if not name or not label:
                c.skip(f"{path}:{lineno}", "empty name or discrete label")
                continue
            extra = {"raw_label": label, "speaker_known": False, "list": path.name}
            if row.get("valence") not in (None, ""):
                extra["valence"] = _float_or_none(row["valence"])
            video = videos.get(name)
            c.add(CorpusRecord(name, str(video) if video else None, label, name, extra), f"{path}:{lineno}")


def _read_dfew(c: _Collector, **options: Any) -> None:
    from emollm.labels import DFEW_LABELS

    _no_options("dfew", options)
    files = sorted(c.root.rglob("set_*.csv"))
    if not files:
        c.skip(c.root, "no EmoLabel_DataSplit/*/set_N.csv below this folder; is it the DFEW root?")
        return
    videos = {p.stem: p for p in _media_files(c.root)}
    folds: dict[str, dict[str, Any]] = {}
    for path in files:
        m = re.match(r"set_(\d+)", path.stem)
        split = "test" if path.parent.name.lower().startswith("test") else "train"
        fold = int(m.group(1)) if m else 0
        reader = csv.DictReader(_read_text(path).splitlines())
        if not {"video_name", "label"} <= set(reader.fieldnames or []):
            c.skip(path, f"header {reader.fieldnames} lacks video_name,label")
            continue
        for lineno, row in enumerate(reader, start=2):
            name, raw = (row["video_name"] or "").strip(), (row["label"] or "").strip()
            if not raw.isdigit() or not 1 <= int(raw) <= len(DFEW_LABELS):
                c.skip(f"{path}:{lineno}", f"label {raw!r} is not 1-{len(DFEW_LABELS)}")
                continue
            name = name.zfill(5) if name.isdigit() else name
            entry = folds.setdefault(name, {"label": DFEW_LABELS[int(raw) - 1], "raw": raw, "test_fold": None})
            if split == "test":
                entry["test_fold"] = fold
    for name, entry in sorted(folds.items()):
        video = videos.get(name)
        extra = {"raw_label": entry["raw"], "speaker_known": False, "test_fold": entry["test_fold"]}
        c.add(CorpusRecord(name, str(video) if video else None, entry["label"], name, extra), c.root)


def _read_merr(c: _Collector, **options: Any) -> None:
    from emollm.data.merr_files import read_label_txt

    _no_options("merr", options)
    files = [c.root] if c.root.is_file() else sorted(c.root.glob("*.txt"))
    if not files:
        c.skip(c.root, "no label list TXT (N [C] E [V]) here")
        return
    for path in files:
        try:
            rows = read_label_txt(path)
        except ValueError as e:
            c.skip(path, str(e))
            continue
        for row in rows:
            extra = {"raw_label": row.label, "speaker_known": False, "list": path.name}
            if row.valence is not None:
                extra["valence"] = row.valence
            c.add(CorpusRecord(row.name, None, row.label, row.name, extra), path)


# ---------------------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class CorpusSpec:
    """One corpus: its reader, and how its published folds are formed.

    Attributes:
        read: ``read(collector, **options)``.
        description: One line for ``emollm data list --help``.
        published: How the corpus' own protocol splits it: ``session`` (IEMOCAP's leave-one-session-out),
            ``split`` (MELD's train/dev/test), ``test_fold`` (DFEW's five sets) or None (none published).
        speakers: Whether the corpus has speaker ids (False: each clip is its own "speaker").
    """

    read: Callable[..., None]
    description: str
    published: Literal["session", "split", "test_fold"] | None = None
    speakers: bool = True


CORPORA: dict[str, CorpusSpec] = {
    "ravdess": CorpusSpec(_read_ravdess, "RAVDESS: 24 actors, 8 emotions, file names carry every field"),
    "crema-d": CorpusSpec(_read_crema_d, "CREMA-D: 91 actors, 6 emotions, 12 sentences, 4 intensity levels"),
    "iemocap": CorpusSpec(
        _read_iemocap, "IEMOCAP: 5 sessions x 2 speakers; EmoEvaluation summaries (option classes=all|4|6)", "session"
    ),
    "meld": CorpusSpec(_read_meld, "MELD: Friends dialogues, 7 emotions, transcripts in extra.text", "split"),
    "mer2023": CorpusSpec(_read_mer2023, "MER2023 label CSV (name,discrete,valence); no speaker ids", speakers=False),
    "dfew": CorpusSpec(_read_dfew, "DFEW: 7 classes, the five published folds; no speaker ids", "test_fold", False),
    "merr": CorpusSpec(_read_merr, "MERR / MER2023 label list TXT (N [C] E [V]); no speaker ids", speakers=False),
}
"""Every corpus with a reader, by name (data first: add a reader and an entry)."""


def list_corpora() -> list[str]:
    return list(CORPORA)


def get_corpus(name: str) -> CorpusSpec:
    """The :class:`CorpusSpec` of ``name`` (``crema_d`` and ``CREMA-D`` are accepted for ``crema-d``)."""
    key = name.strip().lower().replace("_", "-")
    if key not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    return CORPORA[key]


def read_corpus(name: str, root: str | os.PathLike[str], *, strict: bool = False, **options: Any) -> CorpusListing:
    """Read corpus ``name`` from a local copy at ``root``.

    Args:
        name: A key of :data:`CORPORA`.
        root: The corpus folder (or, for ``merr``/``mer2023``, a single list file).
        strict: Raise at the first file that does not follow the corpus' scheme instead of collecting it in
            :attr:`CorpusListing.skipped`.
        **options: Reader options (``classes="4"`` for IEMOCAP).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        CorpusFormatError: ``strict`` and a malformed file or line (named in the message).
        ValueError: Unknown corpus or reader option.
    """
    spec = get_corpus(name)
    key = name.strip().lower().replace("_", "-")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{key}: {root} does not exist; pass the folder of your local copy of the corpus")
    collector = _Collector(key, root, strict)
    spec.read(collector, **options)
    return collector.listing()


# ------------------------------------------------------------------------------------------------------------ splits


def corpus_folds(
    listing: CorpusListing,
    by: Literal["speaker", "published"] = "speaker",
    k: int = 5,
    *,
    seed: int = 0,
    val: bool = True,
) -> list[Fold]:
    """Folds of a listing: ``speaker`` (k speaker-independent folds balanced by clip count) or ``published`` (the
    corpus' own protocol: IEMOCAP leave-one-session-out, 5 folds, val = the next session; MELD train/dev/test, one
    fold; DFEW's five sets, no validation split).

    Raises:
        ValueError: ``published`` for a corpus without published folds, or too few speakers for ``k``.
    """
    from emollm.data.splits import folds_from_bins, speaker_folds

    spec = get_corpus(listing.corpus)
    if by == "speaker":
        if not spec.speakers:
            warnings.warn(
                f"{listing.corpus} has no speaker ids: each clip is its own speaker, so these folds are clip folds "
                "and cannot guarantee speaker independence",
                stacklevel=2,
            )
        return speaker_folds(((r.name, r.speaker) for r in listing.records), k, seed=seed, val=val)
    if by != "published":
        raise ValueError(f"--by must be 'speaker' or 'published', got {by!r}")
    if spec.published is None:
        raise ValueError(f"{listing.corpus} publishes no folds; use --by speaker")
    if spec.published == "session":
        groups: dict[str, list[str]] = {}
        for r in listing.records:
            groups.setdefault(f"Session{r.extra['session']}", []).append(r.name)
        return folds_from_bins(groups, [[g] for g in sorted(groups)], val=val)
    if spec.published == "split":
        by_split: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
        for r in listing.records:
            by_split[r.extra["split"]].append(r.name)
        return [
            Fold(0, sorted(by_split["train"]), sorted(by_split["dev"]), sorted(by_split["test"]), ["test"], ["dev"])
        ]
    # test_fold (DFEW): each clip is in the test set of one published set and in the training set of the others.
    sets = sorted({r.extra["test_fold"] for r in listing.records if r.extra.get("test_fold") is not None})
    folds = []
    for i, s in enumerate(sets):
        test = sorted(r.name for r in listing.records if r.extra.get("test_fold") == s)
        train = sorted(r.name for r in listing.records if r.extra.get("test_fold") != s)
        folds.append(Fold(i, train, [], test, [f"set_{s}"], []))
    return folds


# ----------------------------------------------------------------------------------------------------------- helpers


def _no_options(corpus: str, options: dict[str, Any]) -> None:
    if options:
        raise ValueError(f"{corpus}: unknown reader option(s) {', '.join(sorted(options))}")


def _rank(value: str, order: Iterable[str]) -> int:
    order = list(order)
    return order.index(value) if value in order else len(order)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _float_or_none(value: Any) -> float | None:
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return None
