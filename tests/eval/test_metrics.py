"""emollm_eval.metrics: cross-checks against scikit-learn, golden values, invalid-prediction accounting, bootstrap."""

import numpy as np
import pytest

from emollm_eval import metrics as M
from emollm_eval.metrics import INVALID

sk = pytest.importorskip("sklearn.metrics")

LABELS = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]
DUMMY = "__invalid__"  # how an invalid prediction is spelled for scikit-learn: a label left out of labels=


def _random(seed: int, n: int = 400, p_invalid: float = 0.0) -> tuple[list[str], list[str | None]]:
    rng = np.random.default_rng(seed)
    # Skewed class frequencies, and predictions that are right ~50% of the time, so no metric is trivial.
    t = rng.choice(LABELS, size=n, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05])
    p = np.where(rng.random(n) < 0.5, t, rng.choice(LABELS, size=n))
    pred: list[str | None] = [str(x) for x in p]
    for i in np.flatnonzero(rng.random(n) < p_invalid):
        pred[i] = None if i % 2 else INVALID
    return [str(x) for x in t], pred


def _sk(pred: list[str | None]) -> list[str]:
    return [DUMMY if M.is_invalid(x) else x for x in pred]


@pytest.mark.parametrize("p_invalid", [0.0, 0.15])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_on_random_data(seed: int, p_invalid: float) -> None:
    y_true, y_pred = _random(seed, p_invalid=p_invalid)
    sk_pred = _sk(y_pred)
    if p_invalid:
        assert M.invalid_count(y_pred) > 0

    np.testing.assert_array_equal(
        M.confusion_matrix(y_true, y_pred, LABELS), sk.confusion_matrix(y_true, sk_pred, labels=LABELS)
    )
    assert M.uar(y_true, y_pred, LABELS) == pytest.approx(
        sk.recall_score(y_true, sk_pred, labels=LABELS, average="macro", zero_division=0)
    )
    assert M.war(y_true, y_pred) == pytest.approx(sk.accuracy_score(y_true, sk_pred))
    assert M.accuracy(y_true, y_pred) == pytest.approx(sk.accuracy_score(y_true, sk_pred))
    for average, ours in [("weighted", M.weighted_f1), ("macro", M.macro_f1)]:
        assert ours(y_true, y_pred, LABELS) == pytest.approx(
            sk.f1_score(y_true, sk_pred, labels=LABELS, average=average, zero_division=0)
        )
    assert M.weighted_precision(y_true, y_pred, LABELS) == pytest.approx(
        sk.precision_score(y_true, sk_pred, labels=LABELS, average="weighted", zero_division=0)
    )
    ours = M.precision_recall_f1_support(y_true, y_pred, LABELS)
    theirs = sk.precision_recall_fscore_support(y_true, sk_pred, labels=LABELS, zero_division=0)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(M.per_class_recall(y_true, y_pred, LABELS), theirs[1])


def test_default_labels_match_sklearn() -> None:
    y_true, y_pred = _random(3, n=60)
    np.testing.assert_array_equal(M.confusion_matrix(y_true, y_pred), sk.confusion_matrix(y_true, y_pred))
    assert M.weighted_f1(y_true, y_pred) == pytest.approx(sk.f1_score(y_true, y_pred, average="weighted"))


def test_zero_division_is_zero_like_sklearn() -> None:
    # "sad" is never predicted (precision 0/0) and "fear" has no gold sample (recall 0/0).
    y_true = ["happy", "happy", "sad", "neutral"]
    y_pred = ["happy", "fear", "happy", "neutral"]
    labels = ["happy", "sad", "neutral", "fear"]
    ours = M.precision_recall_f1_support(y_true, y_pred, labels)
    theirs = sk.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b)
    assert M.macro_f1(y_true, y_pred, labels) == pytest.approx(
        sk.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    )


def test_uar_leaves_out_classes_without_gold_samples() -> None:
    y_true = ["happy", "happy", "sad", "sad"]
    y_pred = ["happy", "sad", "sad", "sad"]
    # happy 1/2, sad 2/2; the other five DFEW classes have no gold sample and are not averaged in as 0.
    assert M.uar(y_true, y_pred, LABELS) == pytest.approx(0.75)
    assert M.uar(y_true, y_pred, LABELS) == pytest.approx(
        sk.recall_score(y_true, y_pred, labels=["happy", "sad"], average="macro")
    )


def test_golden_values_by_hand() -> None:
    y_true = ["happy", "happy", "happy", "sad", "sad", "angry"]
    y_pred = ["happy", "happy", None, "happy", "sad", "angry"]
    labels = ["happy", "sad", "angry"]
    # recall: happy 2/3 (one invalid), sad 1/2, angry 1/1; precision: happy 2/3, sad 1/1, angry 1/1.
    assert M.uar(y_true, y_pred, labels) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert M.war(y_true, y_pred) == pytest.approx(4 / 6)
    f1 = np.array([2 / 3, 2 / 3, 1.0])  # happy 2PR/(P+R) = 2/3; sad 2*1*0.5/1.5 = 2/3; angry 1
    assert M.weighted_f1(y_true, y_pred, labels) == pytest.approx((f1 * [3, 2, 1]).sum() / 6)
    np.testing.assert_array_equal(
        M.confusion_matrix(y_true, y_pred, labels, include_invalid=True), [[2, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 0]]
    )


def test_invalid_only_lowers_recall_of_gold_class() -> None:
    labels = ["a", "b"]
    y_true = ["a", "a", "b", "b"]
    valid = ["a", "a", "b", "b"]
    with_invalid = ["a", INVALID, "b", "b"]
    p0, r0, _, s0 = M.precision_recall_f1_support(y_true, valid, labels)
    p1, r1, _, s1 = M.precision_recall_f1_support(y_true, with_invalid, labels)
    np.testing.assert_allclose(p1, p0)  # nobody's prediction: precision unchanged
    np.testing.assert_allclose(r1, [0.5, 1.0])  # a miss of class a
    np.testing.assert_array_equal(s1, s0)  # still in the support
    assert M.accuracy(y_true, with_invalid) == 0.75
    assert M.confusion_matrix(y_true, with_invalid, labels).sum() == 3  # not a row or column
    assert M.confusion_matrix(y_true, with_invalid, labels, include_invalid=True)[:, -1].tolist() == [1, 0]


def test_all_invalid_scores_zero() -> None:
    y_true = ["a", "b", "a"]
    y_pred = [None, None, None]
    assert M.accuracy(y_true, y_pred) == 0.0
    assert M.uar(y_true, y_pred, ["a", "b"]) == 0.0
    assert M.weighted_f1(y_true, y_pred, ["a", "b"]) == 0.0
    assert M.invalid_count(y_pred) == 3


def test_emotion_llama_mer2023_confusion_matrix_reproduces_reported_numbers() -> None:
    """REFERENCE §6.1: checkpoints/save_checkpoint/stage2/result/MER2023.txt (834 clips, sklearn sorted order)."""
    order = ["angry", "happy", "neutral", "sad", "surprise", "worried"]
    cm = np.array(
        [
            [179, 1, 2, 1, 0, 0],
            [2, 152, 7, 4, 3, 1],
            [10, 10, 134, 6, 2, 4],
            [2, 2, 1, 250, 0, 2],
            [1, 0, 3, 1, 6, 3],
            [4, 1, 3, 2, 1, 34],
        ]
    )
    y_true = [order[i] for i in range(6) for j in range(6) for _ in range(cm[i, j])]
    y_pred = [order[j] for i in range(6) for j in range(6) for _ in range(cm[i, j])]
    assert len(y_true) == 834
    mer_labels = ["neutral", "angry", "happy", "sad", "worried", "surprise"]  # canonical order; averages agree
    assert round(M.accuracy(y_true, y_pred), 6) == 0.905276
    assert round(M.weighted_f1(y_true, y_pred, mer_labels), 6) == 0.903577
    assert round(M.weighted_precision(y_true, y_pred, mer_labels), 6) == 0.903625
    np.testing.assert_array_equal(M.confusion_matrix(y_true, y_pred, order), cm)


def test_valence_mse_and_combined() -> None:
    assert M.valence_mse([1.0, -2.0, 0.5], [0.0, -2.0, 1.5]) == pytest.approx(2 / 3)
    t = np.random.default_rng(0).normal(size=50)
    p = t + np.random.default_rng(1).normal(size=50)
    assert M.valence_mse(t, p) == pytest.approx(sk.mean_squared_error(t, p))
    assert M.mer2023_combined(0.8, 0.4) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="finite"):
        M.valence_mse([1.0], [float("nan")])
    with pytest.raises(ValueError, match="equal length"):
        M.valence_mse([1.0, 2.0], [1.0])


def test_bootstrap_ci_contains_estimate_and_is_deterministic() -> None:
    y_true, y_pred = _random(4, n=300, p_invalid=0.1)

    def fn(t: np.ndarray, p: np.ndarray) -> float:
        return M.uar(t, p, LABELS)

    low, high = M.bootstrap_ci(fn, y_true, y_pred, n_resamples=200, seed=7)
    assert 0.0 <= low <= fn(np.asarray(y_true), _as_invalid(y_pred)) <= high <= 1.0
    assert high - low < 0.25
    assert M.bootstrap_ci(fn, y_true, y_pred, n_resamples=200, seed=7) == (low, high)
    assert M.bootstrap_ci(fn, y_true, y_pred, n_resamples=200, seed=8) != (low, high)
    narrow = M.bootstrap_ci(fn, y_true, y_pred, n_resamples=200, alpha=0.5, seed=7)
    assert low <= narrow[0] <= narrow[1] <= high
    lo, hi = M.bootstrap_ci(M.accuracy, y_true, y_pred, n_resamples=200)
    assert lo <= M.accuracy(y_true, y_pred) <= hi


def _as_invalid(pred: list[str | None]) -> np.ndarray:
    return np.asarray([INVALID if x is None else x for x in pred])


def test_bootstrap_ci_on_indices_for_paired_metrics() -> None:
    t = np.linspace(-2, 2, 40)
    p = t + 0.5
    idx = np.arange(40)
    low, high = M.bootstrap_ci(lambda i, _: M.valence_mse(t[i], p[i]), idx, idx, n_resamples=50)
    assert low == pytest.approx(0.25) and high == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "labels", "match"),
    [
        (["a", "b"], ["a"], ["a", "b"], "differ in length"),
        ([], [], ["a"], "empty"),
        (["a", "c"], ["a", "a"], ["a", "b"], r"gold labels \['c'\]"),
        (["a", None], ["a", "a"], ["a", "b"], "y_true contains an invalid"),
        (["a", "b"], ["a", "zzz"], ["a", "b"], r"predictions \['zzz'\] are not in labels"),
        (["a", "b"], ["a", "b"], ["a", "a"], "duplicates"),
        (["a", "b"], ["a", "b"], [], "empty"),
        (["a", "b"], ["a", "b"], ["a", "b", INVALID], "reserved"),
    ],
)
def test_bad_inputs_raise(y_true: list, y_pred: list, labels: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        M.weighted_f1(y_true, y_pred, labels)


def test_bootstrap_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="alpha"):
        M.bootstrap_ci(M.accuracy, ["a"], ["a"], alpha=1.5)
    with pytest.raises(ValueError, match="n_resamples"):
        M.bootstrap_ci(M.accuracy, ["a"], ["a"], n_resamples=0)
    with pytest.raises(ValueError, match="empty"):
        M.bootstrap_ci(M.accuracy, [], [])
