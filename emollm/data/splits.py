"""Which data is a test split: one rule for training (``validate`` refuses a test file as validation data) and
evaluation (no selection on a test split).

Example:
    >>> looks_like_test_split("MER2023/relative_test3_NCEV.txt"), looks_like_test_split("data/latest/val.jsonl")
    (True, False)
    >>> is_test_split("val"), is_test_split("set_1_test"), is_test_split("unknown")
    (False, True, True)
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Fold",
    "check_folds",
    "folds_from_bins",
    "group_folds",
    "is_test_split",
    "looks_like_test_split",
    "speaker_folds",
]

_TEST_NAME = re.compile(r"(?<![a-z])test(?!s(?![a-z]))", re.IGNORECASE)  # test, test3, set_1_test; not latest/tests
_TEST_DIR = re.compile(r"^test(?![a-z_])|^test_?set", re.IGNORECASE)  # test/, test3/, test(single-labeled)/, testset/


def looks_like_test_split(path: str) -> bool:
    """True when the file name says ``test`` (``relative_test3_NCEV.txt``, ``set_1_test.csv``) or it sits in a
    ``test`` split folder (``test/``, ``test(single-labeled)/``)."""
    p = Path(path)
    return bool(_TEST_NAME.search(p.stem)) or bool(_TEST_DIR.search(p.parent.name))


def is_test_split(split: str) -> bool:
    """Whether a split name denotes held-out test data (``test``, ``test3``, ``set_1_test``) or is unknown (an
    unknown split is treated as test: selecting on it could leak the test set)."""
    name = split.strip()
    return name.lower() in ("", "unknown") or looks_like_test_split(name)


# ------------------------------------------------------------------------------------ speaker-independent folds
#
# A fold is (train, val, test) lists of clip names such that no speaker has clips in two of them. ``speaker_folds``
# spreads speakers over k groups balanced by clip count (largest speaker first onto the group with the fewest clips,
# ties broken by a seeded hash, so the result is deterministic and independent of input order); fold i tests on
# group i, validates on group i+1 (mod k) and trains on the rest, so every clip is in exactly one test fold.


@dataclass(frozen=True)
class Fold:
    """One fold of a cross-validation: clip names per split (``val`` may be empty: then nothing is selected on)."""

    index: int
    train: list[str]
    val: list[str]
    test: list[str]
    test_groups: list[str] = field(default_factory=list)
    """The speakers (or sessions / published sets) of the test split."""
    val_groups: list[str] = field(default_factory=list)

    def split_of(self) -> dict[str, str]:
        """``{name: "train" | "val" | "test"}``."""
        out = {n: "train" for n in self.train}
        out.update({n: "val" for n in self.val})
        out.update({n: "test" for n in self.test})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "fold": self.index,
            "test_groups": self.test_groups,
            "val_groups": self.val_groups,
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "train": self.train,
            "val": self.val,
            "test": self.test,
        }


def _stable_hash(text: str, seed: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest(), "big")


def group_folds(groups: Mapping[str, Sequence[str]], k: int, *, seed: int = 0) -> list[list[str]]:
    """Spread groups (speaker -> clip names) over ``k`` bins balanced by clip count; each bin a sorted group list.

    Deterministic: the same groups give the same bins whatever their order; ``seed`` changes tie-breaks only.

    Raises:
        ValueError: ``k < 2`` or fewer groups than ``k`` (naming both counts).
    """
    if k < 2:
        raise ValueError(f"--folds must be at least 2, got {k}")
    if len(groups) < k:
        raise ValueError(
            f"cannot make {k} speaker-independent folds from {len(groups)} speakers; use --folds <= {len(groups)}"
        )
    order = sorted(groups, key=lambda g: (-len(groups[g]), _stable_hash(g, seed), g))
    bins: list[list[str]] = [[] for _ in range(k)]
    sizes = [0] * k
    for g in order:
        i = min(range(k), key=lambda j: (sizes[j], len(bins[j]), j))
        bins[i].append(g)
        sizes[i] += len(groups[g])
    return [sorted(b) for b in bins]


def folds_from_bins(
    groups: Mapping[str, Sequence[str]], bins: Sequence[Sequence[str]], *, val: bool = True
) -> list[Fold]:
    """Fold i tests on bin i, validates on bin i+1 (mod k) when ``val`` (needs k >= 3), trains on the rest."""
    k = len(bins)
    if val and k < 3:
        raise ValueError(f"a validation split needs at least 3 folds (test, val, train), got {k}; pass --no-val")
    folds = []
    for i in range(k):
        j = (i + 1) % k if val else None
        test = sorted(n for g in bins[i] for n in groups[g])
        valn = sorted(n for g in bins[j] for n in groups[g]) if j is not None else []
        train = sorted(n for b, gs in enumerate(bins) if b not in (i, j) for g in gs for n in groups[g])
        folds.append(Fold(i, train, valn, test, list(bins[i]), list(bins[j]) if j is not None else []))
    return folds


def speaker_folds(items: Iterable[tuple[str, str]], k: int, *, seed: int = 0, val: bool = True) -> list[Fold]:
    """k speaker-independent folds of ``(name, speaker)`` items, balanced by clip count.

    Raises:
        ValueError: A duplicate name, an empty speaker, or too few speakers for ``k``.
    """
    groups: dict[str, list[str]] = {}
    seen: set[str] = set()
    for name, speaker in items:
        if name in seen:
            raise ValueError(f"duplicate clip name {name!r}: every clip must be listed once")
        if speaker is None or not str(speaker).strip():
            raise ValueError(f"clip {name!r} has no speaker; speaker-independent folds need one per clip")
        seen.add(name)
        groups.setdefault(str(speaker), []).append(name)
    return folds_from_bins(groups, group_folds(groups, k, seed=seed), val=val)


def check_folds(folds: Sequence[Fold], speaker_of: Mapping[str, str]) -> None:
    """Raise ``ValueError`` when a speaker is in two splits of a fold or a clip is not in exactly one test fold."""
    tests: Counter = Counter()
    for fold in folds:
        owner: dict[str, str] = {}
        for split in ("train", "val", "test"):
            for name in getattr(fold, split):
                spk = speaker_of[name]
                if owner.setdefault(spk, split) != split:
                    raise ValueError(f"fold {fold.index}: speaker {spk!r} is in both {owner[spk]} and {split}")
        tests.update(fold.test)
    bad = [n for n in speaker_of if tests[n] != 1]
    if bad:
        raise ValueError(f"{len(bad)} clips are not in exactly one test fold, e.g. {bad[0]!r} ({tests[bad[0]]} times)")
