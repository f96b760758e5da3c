"""``emollm eval baseline``: a non-LLM late-fusion baseline on cached features, so an LLM number has an honest
classic row beside it.

One multinomial logistic regression per modality on the utterance features of the feature cache (mean over frames
when a file holds several), trained on the train list only with fixed hyper-parameters (nothing is tuned, so
nothing is selected on the test split); at test time the per-modality probabilities are averaged over the
modalities the clip has (a missing modality is dropped, never zero-filled). A clip with no features at all gets no
prediction (invalid). Writes ``predictions.csv`` (``name,pred``) and ``baseline.json`` (settings, train accuracy,
fingerprints of the features, library versions, and the near-ties).

Reproducible: the fit has no random step (zero init, a convex loss, float64 LBFGS on one thread), so the same
features give the same predictions, bit for bit, on every run of a machine. What can still move between machines is
a near-tie (:data:`NEAR_TIE`): a clip whose evidence cannot separate two classes; ``baseline.json`` lists them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emollm.data.merr_files import read_label_txt
from emollm.utils.io import atomic_write_json, atomic_write_text

__all__ = ["late_fusion_baseline"]


def _load(folder: Path, name: str) -> np.ndarray | None:
    path = folder / f"{name}.npy"
    if not path.is_file():
        return None
    x = np.load(path, allow_pickle=False).astype(np.float32)
    x = x.reshape(-1, x.shape[-1]).mean(axis=0) if x.ndim > 1 else x
    return x if np.isfinite(x).all() else None


SOLVER = {"solver": "LBFGS (strong Wolfe)", "dtype": "float64", "init": "zeros", "max_iter": 300, "l2": 1e-3,
          "tolerance_grad": 1e-9, "tolerance_change": 1e-12, "threads": 1}  # fmt: skip
"""The classifier's settings, recorded in ``baseline.json``. Zero init and a convex loss leave no random step: the
seed changes nothing, and float64 on one thread makes the result the same bits on every run of a machine."""

NEAR_TIE = 1e-3
"""Predictions whose two most probable classes differ by less than this are counted as near-ties in
``baseline.json``: the classifier cannot tell those classes apart for that clip (e.g. a clip whose only modality is
the same face photo for several labels), so float noise of another machine, thread count or library version can
flip them; their number bounds how much the accuracy can move between machines."""


def _fit(x: np.ndarray, y: np.ndarray, k: int, *, steps: int = 300, l2: float = 1e-3, seed: int = 0) -> Any:
    """A multinomial logistic regression on standardised features: ``predict(z) -> probabilities``.

    Deterministic by construction (``seed`` is kept for the API and has no effect): zero init, float64, one thread.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(SOLVER["threads"])
    try:
        mu, sd = x.mean(0), x.std(0) + 1e-6
        xt = torch.tensor((x - mu) / sd, dtype=torch.float64)
        yt = torch.tensor(y)
        weight = torch.zeros(k, x.shape[1], dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(k, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS(
            [weight, bias], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe",
            tolerance_grad=SOLVER["tolerance_grad"], tolerance_change=SOLVER["tolerance_change"],
        )  # fmt: skip

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(xt @ weight.T + bias, yt) + l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        w, b = weight.detach().clone(), bias.detach().clone()
    finally:
        torch.set_num_threads(threads)

    def predict(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            zt = torch.tensor((np.asarray(z, dtype=np.float64) - mu) / sd, dtype=torch.float64)
            return (zt @ w.T + b).softmax(-1).numpy()

    return predict


def _fingerprint(arrays: list[np.ndarray]) -> str:
    """sha256 of the feature arrays a classifier saw (two runs with the same fingerprint had the same input)."""
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def late_fusion_baseline(
    feature_root: str | Path,
    modalities: Mapping[str, str],
    train_list: str | Path,
    test_list: str | Path,
    labels: Sequence[str],
    out_dir: str | Path,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """Train the per-modality classifiers on ``train_list`` and predict ``test_list``.

    Args:
        feature_root: Folder holding one sub-folder of ``<name>.npy`` per modality (the feature cache).
        modalities: Modality -> sub-folder (e.g. ``{"audio": "whisper", "face": "fer"}``).
        train_list: ``N C E V`` list of the training clips.
        test_list: ``N C E V`` list of the clips to predict (only names are read).
        labels: The classes.
        out_dir: Where ``predictions.csv`` and ``baseline.json`` go.
        seed: Recorded in ``baseline.json``; the fit itself has no random step (:data:`SOLVER`).

    Raises:
        ValueError: A modality without training features for at least two classes.
    """
    root = Path(feature_root)
    labels = list(labels)
    train = [(r.name, r.label) for r in read_label_txt(train_list) if r.label in labels]
    test = [r.name for r in read_label_txt(test_list)]
    models, info = {}, {}
    for m, sub in modalities.items():
        pairs = [(x, labels.index(lab)) for name, lab in train if (x := _load(root / sub, name)) is not None]
        ys = sorted({y for _, y in pairs})
        if len(ys) < 2:
            raise ValueError(f"{root / sub}: training features of {m} cover {len(ys)} class(es); need at least two")
        x, y = np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        models[m] = _fit(x, y, len(labels), seed=seed)
        info[m] = {"folder": str(root / sub), "n_train": len(pairs), "train_features_sha256": _fingerprint([x]),
                   "train_accuracy": float((models[m](x).argmax(1) == y).mean())}  # fmt: skip
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "pred"])
    n_pred, ties, seen = 0, [], []
    for name in test:
        feats = [(m, x) for m, sub in modalities.items() if (x := _load(root / sub, name)) is not None]
        seen += [x for _, x in feats]
        probs = [models[m](x[None])[0] for m, x in feats]
        pred = ""
        if probs:
            mean = np.mean(probs, axis=0)
            pred = labels[int(mean.argmax())]
            top2 = np.sort(mean)[-2:]
            if top2[1] - top2[0] < NEAR_TIE:
                ties.append(name)
        n_pred += bool(pred)
        w.writerow([name, pred])
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "predictions.csv", buf.getvalue())
    import torch

    summary = {
        "method": "late fusion: per-modality logistic regression (LBFGS, l2 1e-3, standardised features), "
        "probabilities averaged over the modalities present",
        "modalities": info,
        "n_test": len(test),
        "n_predicted": n_pred,
        "selection": "none (fixed hyper-parameters)",
        "solver": SOLVER,
        "seed": seed,
        "test_features_sha256": _fingerprint(seen),
        "near_ties": {"threshold": NEAR_TIE, "n": len(ties), "names": ties},
        "versions": {"numpy": np.__version__, "torch": torch.__version__},
    }
    atomic_write_json(out_dir / "baseline.json", summary)
    return summary
