"""``emollm eval`` with ``ov_gold``: free-text answers scored as emotion-word sets (``emollm.scoring.openvocab``)
against a
MER-OV ``name,openset`` CSV, in ``metrics.json`` and ``report.md``; adding the key later reuses the predictions."""

from __future__ import annotations

import json

import pytest

import emollm.model.generation
from emollm_eval.runner import load_config, run_eval

from .test_runner import REPO, CountingChat, dfew_data, dfew_overrides, tiny_checkpoint, write_yaml  # noqa: F401

ANSWERS = {
    "00001": "The person looks happy and calm.",  # {happy, calm} against {happy}: precision 1/2
    "00002": "She is sad.",
    "00003": "He is not angry, he is surprised.",  # negated anger dropped
    "00004": "neutral",
    "00005": "",  # no emotion word
}
GOLD = {
    "00001": "['happy']",
    "00002": "['sad', 'worried']",
    "00003": "['angry']",
    "00004": "['neutral']",
    "00005": "['fear']",
    "00006": "[]",  # empty reference: skipped
}


def test_eval_reports_open_vocabulary_metrics(tiny_checkpoint, dfew_data, tmp_path, monkeypatch):  # noqa: F811
    from emollm.scoring.openvocab import normalize_set, ov_scores, parse_emotions

    ov = tmp_path / "ov-gold.csv"
    ov.write_text("name,openset\n" + "".join(f'{n},"{s}"\n' for n, s in GOLD.items()))
    fake = CountingChat(lambda s: ANSWERS.get(s.name, "I cannot tell."))
    monkeypatch.setattr(emollm.model.generation, "chat", fake)
    out = tmp_path / "out"
    cfg = load_config(write_yaml(tmp_path / "e.yaml", dfew_overrides(tiny_checkpoint, dfew_data, out, "limit=6")))
    assert "open_vocabulary" not in run_eval(cfg, progress=False).metrics  # no ov_gold: no OV section
    assert len(fake.samples) == 6

    cfg = load_config(
        write_yaml(tmp_path / "e.yaml", dfew_overrides(tiny_checkpoint, dfew_data, out, "limit=6", f"ov_gold={ov}"))
    )
    result = run_eval(cfg, progress=False)
    assert result.generated == 0 and len(fake.samples) == 6  # scoring only: the predictions are reused
    m = result.metrics["open_vocabulary"]
    names = [f"{i:05d}" for i in range(1, 7)]
    want = ov_scores(
        [parse_emotions(ANSWERS.get(n, "I cannot tell.")) for n in names],
        [normalize_set(json.loads(GOLD[n].replace("'", '"'))) for n in names],
    )
    assert {k: m[k] for k in want} == want
    assert m["n"] == 5 and m["skipped"] == 1 and m["without_reference"] == 0 and m["empty_pred"] == 1
    assert m["hit_rate"] == pytest.approx(3 / 5)  # happy, sad, neutral; 'not angry' does not count
    assert m["precision"] == pytest.approx((1 / 2 + 1 + 0 + 1 + 0) / 5)  # 00001 answers {happy, calm}
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["open_vocabulary"] == m and "accuracy" in saved  # beside the classification metrics
    report = (out / "report.md").read_text()
    assert "## Open-vocabulary emotions" in report and "5 samples scored" in report
    assert f"| hit rate | {100 * m['hit_rate']:.2f} |" in report
