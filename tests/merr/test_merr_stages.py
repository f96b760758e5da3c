"""emollm_merr.stages, whole-set steps on hand-made stage results: label assignment (review, vocabulary, neutral
augmentation) and the reasoning filters (contradiction, dedup, balance)."""

from __future__ import annotations

from emollm_merr.config import BuildConfig
from emollm_merr.review import DROP, Correction
from emollm_merr.stages import apply_filters, assign_labels, read_names


def _au(label: str | None, source: str = "openface", candidates: int = 1, active: int = 3) -> dict:
    return {
        "pseu_emotion": label,
        "au_source": source,
        "candidates": [{}] * candidates,
        "peak_AU_list": ["AU01"] * active,
    }


def test_assign_labels_review_vocabulary_and_neutral():
    cfg = BuildConfig.from_dict({"inputs": {"video_dir": "v"}, "filter": {"add_neutral": True}})
    au = {
        "a": _au("happy"),
        "b": _au("happy"),
        "c": _au("disgust"),
        "d": _au(None, candidates=0, active=0),  # calm: a neutral candidate
        "e": _au(None, candidates=0, active=2),  # too many active AUs for neutral
        "f": _au("sad"),
        "g": _au(None, source="fer", candidates=0, active=0),  # FER labels are never turned neutral
    }
    corrections = {
        "b": Correction("b", "angry", "r", "2026-01-01T00:00:00Z"),
        "f": Correction("f", DROP, "r", "2026-01-01T00:00:00Z"),
    }
    label, source, status, neutral = assign_labels(au, corrections, cfg.filter, cfg.seed)
    assert label == {"a": "happy", "b": "angry", "d": "neutral"}
    assert source == {"a": "openface", "b": "review", "d": "neutral_added"}
    assert status == {
        "a": "labelled",
        "b": "labelled",
        "c": "label_not_in_vocabulary",
        "d": "labelled",
        "e": "no_label",
        "f": "dropped_by_review",
        "g": "no_label",
    }
    assert neutral == ["d"]


def test_apply_filters_drops_with_reasons():
    cfg = BuildConfig.from_dict({"inputs": {"video_dir": "v"}, "filter": {"max_per_class": 1}})
    chosen = ["a", "b", "c", "d", "e"]
    label = {"a": "happy", "b": "happy", "c": "sad", "d": "happy", "e": "angry"}
    source = {n: "openface" for n in chosen} | {"e": "neutral_added"}
    reasoning = {
        "a": "The smile suggests the person in the video feels happy.",
        "b": "The smile suggests the person in the video feels happy.",
        "c": "At first the person may look sad. However, the frown suggests the person feels angry.",
        "d": "Raised cheeks and a wide grin suggest the person in the video feels happy.",
    }
    res = apply_filters(chosen, reasoning, label, source, cfg)
    assert res.drop == {"a": "balance", "b": "duplicate", "c": "contradiction", "e": "reason_error"}  # seeded
    assert res.fine == ["d"] and res.coarse == ["a", "b", "c", "d"]
    assert res.consistency["a"].ok and not res.consistency["c"].ok
    off = BuildConfig.from_dict({"inputs": {"video_dir": "v"}, "reason": {"enabled": False}})
    assert set(apply_filters(chosen, {}, label, source, off).drop.values()) == {"reasoning_disabled"}


def test_read_names_takes_the_first_column(tmp_path):
    f = tmp_path / "names.txt"
    f.write_text("\ufeffa 20 happy -10\n# comment\n\nb\n", encoding="utf-8")
    assert read_names(f) == ["a", "b"]
