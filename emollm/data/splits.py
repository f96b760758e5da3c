"""Which data is a test split: one rule for training (``validate`` refuses a test file as validation data) and
evaluation (no selection on a test split).

Example:
    >>> looks_like_test_split("MER2023/relative_test3_NCEV.txt"), looks_like_test_split("data/latest/val.jsonl")
    (True, False)
    >>> is_test_split("val"), is_test_split("set_1_test"), is_test_split("unknown")
    (False, True, True)
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["is_test_split", "looks_like_test_split"]

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
