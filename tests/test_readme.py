"""The README's Python examples run as written (the analyze one needs the embedded models: marked slow)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.slow
def test_analyze_example_runs(tmp_path, monkeypatch):
    block = next(b for b in _python_blocks() if "emollm.analyze(" in b)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    result = namespace["result"]
    assert result.mode == "clues" and result.label == "happy"
    assert "AU12" in result.evidence["face"]["aus"]
