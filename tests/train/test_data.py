"""Data: MERR / NCEV / JSONL / streaming loaders, feature join, task pool and prompts, samplers, collation."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from emollm.data.collate import TrainCollator
from emollm.data.datasets import (
    FeatureFiles,
    InstructionDataset,
    NoFeatures,
    PromptBuilder,
    StreamingInstructions,
    load_aux_records,
    load_records,
    split_by_name,
)
from emollm.data.samplers import BatchPlan, inverse_frequency_weights
from emollm.runconfig import DataConfig, load_config

from .conftest import FEATURE_DIRS, LABELS, TINY, write_merr_dataset

DIMS = {m: 16 for m in FEATURE_DIRS}


@pytest.fixture(scope="module")
def merr(tmp_path_factory):
    root = tmp_path_factory.mktemp("merr")
    return root, write_merr_dataset(root, n=24, missing_audio=2)


def _cfg(**kw) -> DataConfig:
    cfg = load_config(TINY).data
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


# ------------------------------------------------------------------------------------------------ loading


def test_merr_json_records(merr):
    root, files = merr
    coarse = load_records("merr_json", str(files["coarse"]), transcripts=str(files["transcripts"]))
    fine = load_records("merr_json", str(files["fine"]))
    assert len(coarse) == len(fine) == 24
    r = coarse[1]
    assert r["name"] == "sample_00000001" and r["label"] == "angry"
    assert r["caption"].startswith("The person looks angry") and r["reason"] == r["caption"]  # coarse: reason=caption
    assert r["text"] == "I told you about it 1"  # joined from the transcription CSV
    f = fine[1]
    assert f["reason"].startswith("The cues all indicate angry") and f["caption"] is None and f["text"]


def test_ncev_and_jsonl_records(merr):
    _, files = merr
    ncev = load_records("ncev", str(files["ncev"]), transcripts=str(files["transcripts"]))
    assert ncev[2]["label"] == "happy" and ncev[2]["reason"] is None and ncev[2]["text"] == "I told you about it 2"
    js = load_records("jsonl", str(files["jsonl"]))
    assert js.column_names == ["name", "label", "text", "reason", "caption"]  # aliases: emotion, subtitle
    assert js[3]["label"] == "sad" and js[3]["text"] == "I told you about it 3"
    assert js[5]["text"] is None and js[5]["caption"] is None  # nulls stay None


def test_parquet_and_csv_through_datasets(merr, tmp_path):
    _, files = merr
    js = load_records("jsonl", str(files["jsonl"]))
    js.to_parquet(str(tmp_path / "r.parquet"))
    js.to_csv(str(tmp_path / "r.csv"), index=False)
    for name in ("r.parquet", "r.csv"):
        back = load_records("jsonl", str(tmp_path / name))
        assert back[5] == js[5]


def test_streamed_jsonl_is_lazy_and_sharded(merr):
    _, files = merr
    ds = load_records("jsonl", str(files["jsonl"]), streaming=True)
    builder = PromptBuilder(_cfg(), list(FEATURE_DIRS))
    shards = [
        StreamingInstructions(
            ds, NoFeatures(), builder, {"emotion": 1.0}, seed=0, shuffle_buffer=8, rank=r, world_size=2
        )
        for r in (0, 1)
    ]
    names = [[it.sample.name for it in s.iterate(epoch=0)] for s in shards]
    assert len(names[0]) == len(names[1]) == 12 and not set(names[0]) & set(names[1])
    again = [it.sample.name for it in shards[0].iterate(epoch=0)]
    assert again == names[0]  # deterministic per epoch
    assert [it.sample.name for it in shards[0].iterate(epoch=0, skip=5)] == names[0][5:]  # resume by position
    assert [it.sample.name for it in shards[0].iterate(epoch=1)] != names[0]  # reshuffled next epoch


def test_feature_join_and_missing_policies(merr):
    root, _ = merr
    files = FeatureFiles(root, FEATURE_DIRS, DIMS)
    feats = files.load("sample_00000000")
    assert feats["audio"] is None and feats["face"].shape == (1, 16)  # 1-D .npy -> (1, D)
    assert files.missing_counts([f"sample_{i:08d}" for i in range(24)]) == {"face": 0, "video": 0, "audio": 2}
    with pytest.raises(FileNotFoundError, match="no audio features for sample 'sample_00000000'"):
        FeatureFiles(root, FEATURE_DIRS, DIMS, missing="error").load("sample_00000000")
    with pytest.raises(ValueError, match="width 16, but the model expects 8"):
        FeatureFiles(root, FEATURE_DIRS, {m: 8 for m in FEATURE_DIRS}).load("sample_00000005")


def test_held_out_split_is_by_name(merr):
    _, files = merr
    recs = load_records("merr_json", str(files["coarse"]))
    train, val = split_by_name(recs, 0.25)
    assert sorted(train + val) == list(range(24)) and 0 < len(val) < 12
    assert split_by_name(recs.select(list(reversed(range(24)))), 0.25)[1] == sorted(23 - i for i in val)


def test_aux_text_data_maps_labels(tmp_path):
    path = tmp_path / "goemotions.csv"
    path.write_text("text,label\nI passed!,joy\nSo unfair,anger\nHmm,confusion\n,joy\n")
    recs, dropped = load_aux_records(
        str(path),
        text_field="text",
        label_field="label",
        label_map={"joy": "happy", "anger": "angry"},
        labels=LABELS,
        prefix="aux0",
    )
    assert [r["label"] for r in recs] == ["happy", "angry"] and dropped == 2
    with pytest.raises(ValueError, match="no column 'utterance'"):
        load_aux_records(
            str(path), text_field="utterance", label_field="label", label_map={}, labels=LABELS, prefix="a"
        )


# ------------------------------------------------------------------------------------------------ prompts


def _dataset(merr, **kw):
    root, files = merr
    recs = load_records("merr_json", str(files["fine"]))
    opts = dict(tasks={"emotion": 1.0, "reason": 1.0}, seed=0, train=True)
    cfg = kw.pop("cfg", _cfg())
    opts.update(kw)
    return InstructionDataset(
        [(recs, FeatureFiles(root, FEATURE_DIRS, DIMS))], PromptBuilder(cfg, list(FEATURE_DIRS)), **opts
    )


def test_prompt_layout_follows_emotion_llama(merr):
    ds = _dataset(merr, tasks={"emotion": 1.0})
    item = ds[(4, 0)]
    user, answer = item.sample.messages[0]["content"], item.sample.messages[1]["content"]
    assert user == (
        "<face><video><audio> The person in video says: I told you about it 4. [emotion] Please determine "
        "which emotion label in the video represents: neutral, angry, happy, sad, worried, surprise."
    )
    assert answer == "worried" and item.label == "worried" and item.task == "emotion"
    reason = _dataset(merr, tasks={"reason": 1.0})[(4, 0)]
    assert "[reason]" in reason.sample.messages[0]["content"]
    assert reason.sample.messages[1]["content"].startswith("The cues all indicate worried")


@pytest.mark.parametrize(
    ("order", "check"),
    [
        ("alphabetical", lambda labels: labels == sorted(labels)),
        ("shuffle", lambda labels: sorted(labels) == sorted(LABELS)),
    ],
)
def test_label_order_is_configurable(merr, order, check):
    ds = _dataset(merr, tasks={"emotion": 1.0}, cfg=_cfg(label_order=order))
    lists = set()
    for i in range(8):
        text = ds[(i, 0)].sample.messages[0]["content"]
        labels = text.split("represents: ")[1].rstrip(".").split(", ")
        assert check(labels)
        lists.add(tuple(labels))
    assert (len(lists) > 1) == (order == "shuffle")


def test_samples_are_pure_functions_of_their_key(merr):
    ds = _dataset(merr, modality_dropout=0.5)
    a, b = ds[(7, 3)], ds[(7, 3)]
    assert a.sample.messages == b.sample.messages and a.task == b.task
    assert {k: v is None for k, v in a.sample.features.items()} == {k: v is None for k, v in b.sample.features.items()}
    tasks = Counter(ds[(7, e)].task for e in range(20))
    assert set(tasks) == {"emotion", "reason"}  # drawn per epoch from the pool


def test_modality_dropout_keeps_at_least_one_modality(merr):
    ds = _dataset(merr, modality_dropout=0.9)
    present = [sum(v is not None for v in ds[(i, e)].sample.features.values()) for i in range(2, 24) for e in range(3)]
    assert min(present) >= 1 and any(p < 3 for p in present)
    val = _dataset(merr, modality_dropout=0.9, train=False)
    assert all(sum(v is not None for v in val[(i, 0)].sample.features.values()) == 3 for i in range(2, 24))


def test_text_only_samples_have_no_media_markers():
    builder = PromptBuilder(_cfg(), list(FEATURE_DIRS))
    sample = builder.build({"name": "a", "label": "happy", "text": "yay"}, {}, "emotion", random.Random(0))
    assert not sample.messages[0]["content"].startswith("<")
    assert sample.messages[0]["content"].startswith("The person in video says: yay. [emotion]")


def test_records_without_a_target_are_skipped(merr):
    root, files = merr
    recs = load_records("ncev", str(files["ncev"]))
    with pytest.raises(ValueError, match="no usable training samples"):
        InstructionDataset([(recs, NoFeatures())], PromptBuilder(_cfg(), []), tasks={"reason": 1.0}, seed=0, train=True)


def test_loss_weights_balance_classes(merr):
    ds = _dataset(merr, tasks={"emotion": 1.0}, balance_loss=True)
    labels = ds.labels()
    total = Counter()
    for i, lab in enumerate(labels):
        total[lab] += ds[(i, 0)].weight
    assert max(total.values()) == pytest.approx(min(total.values()))


# ------------------------------------------------------------------------------------------------ samplers


def test_plan_shards_cover_each_step_once():
    plans = [BatchPlan(50, batch_size=3, grad_accum=2, world_size=2, rank=r, seed=1) for r in (0, 1)]
    assert plans[0].steps_per_epoch == 50 // 12
    order = plans[0].epoch_order(0)
    for step in range(plans[0].steps_per_epoch):
        got = [i for p in plans for b in p.step_batches(order, step) for i in b]
        assert sorted(got) == sorted(order[step * 12 : (step + 1) * 12])
    assert plans[0].epoch_order(0) == order and plans[0].epoch_order(1) != order


def test_plan_resumes_mid_epoch():
    plan = BatchPlan(40, batch_size=4, seed=3)
    full = list(plan.iter_epoch(2))
    assert list(plan.iter_epoch(2, start_step=4)) == full[4:]
    assert all(e == 2 for b in full for _, e in b)


def test_group_by_length_reduces_padding():
    rng = random.Random(0)
    lengths = [rng.randint(10, 500) for _ in range(256)]

    def padding(plan):
        waste = 0
        for batch in plan.iter_epoch(0):
            ls = [lengths[i] for i, _ in batch]
            waste += max(ls) * len(ls) - sum(ls)
        return waste

    plain = BatchPlan(256, batch_size=8, seed=0, lengths=lengths)
    grouped = BatchPlan(256, batch_size=8, seed=0, lengths=lengths, group_by_length=True)
    assert padding(grouped) < 0.3 * padding(plain)
    assert sorted(grouped.epoch_order(0)) == sorted(plain.epoch_order(0))  # same samples, other batching


def test_weighted_sampling_balances_classes():
    labels = ["a"] * 90 + ["b"] * 10
    plan = BatchPlan(100, batch_size=10, seed=0, weights=inverse_frequency_weights(labels))
    counts = Counter(labels[i] for e in range(20) for i in plan.epoch_order(e))
    assert 0.8 < counts["b"] / counts["a"] < 1.25


def test_aux_pools_are_mixed_in_by_count():
    plan = BatchPlan(20, batch_size=5, seed=0, pools=[(20, 100, 10)])
    order = plan.epoch_order(0)
    assert plan.steps_per_epoch == 6 and sum(i >= 20 for i in order) <= 10 and sum(i < 20 for i in order) >= 20 - 5


def test_plan_refuses_an_epoch_smaller_than_a_step():
    with pytest.raises(ValueError, match="fewer than one optimizer step"):
        BatchPlan(10, batch_size=4, grad_accum=2, world_size=2)


# ------------------------------------------------------------------------------------------------ collate


def test_collator_pads_and_keeps_bookkeeping(merr):
    from tests.emollm.conftest import make_tiny

    model, processor = make_tiny(
        "smollm2", modalities={m: {"feature_dim": 16, "projector": {"kind": "linear"}} for m in FEATURE_DIRS}
    )
    ds = _dataset(merr, balance_loss=True)
    items = [ds[(i, 0)] for i in range(4)]
    batch = TrainCollator(processor, max_length=512)(items)
    assert batch.batch.input_ids.shape[0] == 4 and batch.weights.shape == (4,)
    assert batch.num_tokens == int(batch.batch.attention_mask.sum())
    assert "audio" in batch.batch.modality_inputs and batch.batch.modality_inputs["audio"].features.shape[0] == 2
    with torch.no_grad():
        out = model(**batch.batch.model_inputs())
    assert torch.isfinite(out.loss)
