"""``emollm eval baseline``: a non-LLM late-fusion baseline on cached features, so an LLM number has an honest
classic row beside it.

One multinomial logistic regression per modality on the utterance features of the feature cache (mean over frames
when a file holds several), trained on the train list only with fixed hyper-parameters (nothing is tuned, so
nothing is selected on the test split); at test time the per-modality probabilities are averaged over the
modalities the clip has (a missing modality is dropped, never zero-filled). A clip with no features at all gets no
prediction (invalid). Writes ``predictions.csv`` (``name,pred``) and ``baseline.json`` (settings, train accuracy).
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


def _fit(x: np.ndarray, y: np.ndarray, k: int, *, steps: int = 300, l2: float = 1e-3, seed: int = 0) -> Any:
    import torch

    torch.manual_seed(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mu) / sd)
    yt = torch.tensor(y)
    lin = torch.nn.Linear(x.shape[1], k)
    opt = torch.optim.LBFGS(lin.parameters(), lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xt), yt) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)

    def predict(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return lin(torch.tensor((z - mu) / sd)).softmax(-1).numpy()

    return predict


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
        seed: Seed of the classifiers.

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
        info[m] = {"folder": str(root / sub), "n_train": len(pairs),
                   "train_accuracy": float((models[m](x).argmax(1) == y).mean())}  # fmt: skip
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "pred"])
    n_pred = 0
    for name in test:
        probs = [models[m](x[None])[0] for m, sub in modalities.items() if (x := _load(root / sub, name)) is not None]
        pred = labels[int(np.mean(probs, axis=0).argmax())] if probs else ""
        n_pred += bool(pred)
        w.writerow([name, pred])
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "predictions.csv", buf.getvalue())
    summary = {
        "method": "late fusion: per-modality logistic regression (LBFGS, l2 1e-3, standardised features), "
        "probabilities averaged over the modalities present",
        "modalities": info,
        "n_test": len(test),
        "n_predicted": n_pred,
        "selection": "none (fixed hyper-parameters)",
    }
    atomic_write_json(out_dir / "baseline.json", summary)
    return summary
