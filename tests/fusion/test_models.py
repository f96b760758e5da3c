"""Fusion methods on synthetic features: shapes, fusion beats unimodal where the label needs both, modality dropout,
deterministic resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emollm.fusion.data import synthetic_task
from emollm.fusion.registry import FUSION_METHODS, build_fusion_model, list_methods
from emollm.fusion.trainer import LOG, evaluate, load_weights, train_model

DIMS = {"audio": 6, "face": 5, "text": 4}


@pytest.mark.parametrize("method", list_methods())
def test_every_method_builds_and_masks(method):
    dims = {"audio": 6} if FUSION_METHODS[method].max_modalities == 1 else DIMS
    model = build_fusion_model(method, dims, 3, hidden=16, steps=4).eval()
    x = {m: torch.randn(5, 4, d) for m, d in dims.items()}
    present = {m: torch.ones(5, dtype=torch.bool) for m in dims}
    assert model(x, present).shape == (5, 3)
    if len(dims) > 1:  # only one modality left for some clips: finite logits, absent inputs ignored where masked
        present = {
            m: torch.tensor([i == 0, True, False, False, True]) if i else torch.tensor([True] * 5)
            for i, m in enumerate(dims)
        }
        out = model(x, present)
        assert torch.isfinite(out).all()
        y = torch.tensor([0, 1, 2, 0, 1])
        model.train()
        model.loss(x, present, y).backward()


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown fusion method 'nope'"):
        build_fusion_model("nope", DIMS, 2)
    with pytest.raises(ValueError, match="unimodal takes 1 modalities"):
        build_fusion_model("unimodal", DIMS, 2)
    with pytest.raises(ValueError, match="late takes >= 2"):
        build_fusion_model("late", {"audio": 3}, 2)
    with pytest.raises(ValueError, match="does not take"):
        build_fusion_model("attention", DIMS, 2, bogus=1)


def _split(data, n_train, n_val):
    idx = np.arange(len(data))
    return data.take(idx[:n_train]), data.take(idx[n_train : n_train + n_val]), data.take(idx[n_train + n_val :])


def _fit(method, data, tmp_path, modalities=None, **kw):
    train, val, test = data
    dims = {m: train.dims[m] for m in (modalities or train.modalities)}
    torch.manual_seed(0)
    model = build_fusion_model(method, dims, len(train.classes), hidden=32, steps=train.steps, **kw)
    train_model(model, train, val, tmp_path / f"{method}-{'-'.join(dims)}-{kw}", epochs=30, patience=8)
    return model


@pytest.fixture(scope="module")
def both_task():
    return _split(synthetic_task("both", n=360, steps=8, seed=1), 240, 60)


def test_fusion_beats_each_unimodal_when_the_label_needs_both(both_task, tmp_path):
    test = both_task[2]
    audio = evaluate(_fit("unimodal", both_task, tmp_path, ["audio"]), test)["accuracy"]
    face = evaluate(_fit("unimodal", both_task, tmp_path, ["face"]), test)["accuracy"]
    assert max(audio, face) < 0.6  # 3 classes: each modality alone is near chance
    for method in ("avgpool_hidden", "maxpool_hidden", "transformer", "attention"):
        kw = {"modality_dropout": 0.3} if method == "transformer" else {}
        acc = evaluate(_fit(method, both_task, tmp_path, **kw), test)["accuracy"]
        assert acc > max(audio, face) + 0.3, (method, acc, audio, face)


@pytest.mark.parametrize("unimodal", ["audio", "face"])
def test_unimodal_tasks_are_learned(unimodal, tmp_path):
    data = _split(synthetic_task(unimodal, n=240, steps=8, seed=3), 160, 40)
    assert evaluate(_fit("unimodal", data, tmp_path, [unimodal]), data[2])["accuracy"] > 0.9
    assert evaluate(_fit("late", data, tmp_path), data[2])["accuracy"] > 0.9


def test_modality_dropout_keeps_accuracy_without_the_face(tmp_path):
    # Both modalities carry the label; the face is clean, audio noisy. Without modality dropout the model leans on
    # the face and collapses when it is missing; with it, it falls back to what audio alone achieves.
    data = _split(synthetic_task("either", n=480, steps=8, seed=2, noise={"audio": 12.0, "face": 1.0}), 300, 60)
    test = data[2]
    audio_only = evaluate(_fit("unimodal", data, tmp_path, ["audio"]), test)["accuracy"]
    for method in ("transformer", "attention"):
        plain = _fit(method, data, tmp_path)
        robust = _fit(method, data, tmp_path, modality_dropout=0.5)
        assert evaluate(robust, test)["accuracy"] > 0.95
        without_face = evaluate(robust, test.without("face"))["accuracy"]
        assert without_face >= audio_only - 0.1, (method, without_face, audio_only)
        assert without_face >= evaluate(plain, test.without("face"))["accuracy"] + 0.1


def test_resume_gives_the_same_weights_as_one_run(tmp_path):
    data = _split(synthetic_task("both", n=120, steps=4, seed=0), 80, 20)
    train, val, _ = data

    def run(folder, stops):
        for stop in stops:  # a fresh model object each call: as after a kill
            torch.manual_seed(123)
            model = build_fusion_model("avgpool_hidden", train.dims, 3, hidden=16, modality_dropout=0.3)
            result = train_model(model, train, val, folder, epochs=6, patience=0, stop_after=stop)
        return model, result

    one, r1 = run(tmp_path / "one", [None])
    two, r2 = run(tmp_path / "two", [2, 1, None])
    assert r1.epochs_run == r2.epochs_run == 6 and r1.best_epoch == r2.best_epoch
    for (k, a), (_, b) in zip(one.state_dict().items(), two.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    log = (tmp_path / "two" / LOG).read_text().splitlines()
    assert [int(json.loads(line)["epoch"]) for line in log] == [1, 2, 3, 4, 5, 6]
    best = load_weights(
        build_fusion_model("avgpool_hidden", train.dims, 3, hidden=16), tmp_path / "two" / "best.safetensors"
    )
    assert evaluate(best, val)["uar"] == pytest.approx(r2.best_score)


def test_no_validation_split_keeps_the_last_epoch(tmp_path):
    train, _, _ = _split(synthetic_task("audio", n=60, steps=4, seed=0), 40, 10)
    model = build_fusion_model("unimodal", {"audio": 24}, 3, hidden=8)
    r = train_model(model, train, None, tmp_path, epochs=3)
    assert r.best_epoch == 3 and r.selection == "last epoch (no validation split)"
