"""One modality in several places: token spans in the processor, row-major filling in ``embed``, and the
``emotion_llama_frame`` projector ([CLS, patches] -> [merged patch tokens..., CLS]) they serve."""

from __future__ import annotations

import pytest
import torch

from emollm.model.configuration import MARKER_RE, ModalityConfig, ProjectorConfig
from emollm.model.processing import Sample
from emollm.model.projectors import build_projector
from tests.emollm.conftest import make_tiny

W = 8  # frame feature width


def frame_model():
    """Tiny llama2 with an audio branch and a precomputed ``frame`` branch (CLS + patches, 4 patches per token)."""
    torch.manual_seed(0)
    mods = {
        "audio": ModalityConfig(feature_dim=6, projector=ProjectorConfig(kind="linear")),
        "frame": ModalityConfig(feature_dim=W, projector=ProjectorConfig(kind="emotion_llama_frame", merge=4)),
    }
    model, processor = make_tiny("llama2", mods)
    return model.eval(), processor


def spans(k: int, text: str = " middle ") -> list[dict]:
    return [
        {"role": "user", "content": [
            {"type": "text", "text": "before "},
            {"type": "frame", "span": [0, k]},
            {"type": "text", "text": text},
            {"type": "audio"},
            {"type": "frame", "span": [k, None]},
            {"type": "text", "text": " after"},
        ]},
    ]  # fmt: skip


def test_frame_marker_and_placeholders():
    assert [m.group(1) for m in MARKER_RE.finditer("<frame><audio><video>")] == ["frame", "audio", "video"]
    model, processor = frame_model()
    assert processor.placeholders["frame"] == "<|emo_frame|>"
    assert model.num_tokens("frame", 1 + 1024) == 257 == model.projectors["frame"].num_tokens(1025)


def test_spans_expand_in_place():
    _, processor = frame_model()
    feats = {"frame": torch.randn(9, W), "audio": torch.randn(2, 6)}  # CLS + 8 patches -> 2 patch tokens + CLS
    text = processor.render(Sample(spans(2), feats, name="s"))[0]["content"]
    f, a = processor.placeholders["frame"], processor.placeholders["audio"]
    assert text == f"before {f * 2} middle {a * 2}{f} after"


def test_string_span_markers_render_like_span_parts():
    """``<frame:0:2>`` ... ``<frame:2:>`` in a string prompt (eval YAML templates) is the typed span form."""
    _, processor = frame_model()
    feats = {"frame": torch.randn(9, W), "audio": torch.randn(2, 6)}
    typed = processor.render(Sample(spans(2), feats, name="s"))
    text = [{"role": "user", "content": "before <frame:0:2> middle <audio><frame:2:> after"}]
    assert processor.render(Sample(text, feats, name="s")) == typed
    with pytest.raises(ValueError, match="must tile"):
        processor.render(Sample([{"role": "user", "content": "<frame:0:2><audio><frame:1:>"}], feats, name="s"))


def test_embed_fills_the_runs_in_reading_order():
    """Tokens in run 1 == projector output[:K-1], the token of run 2 == output[K-1], per sample (rows differ in K)."""
    model, processor = frame_model()
    g = torch.Generator().manual_seed(1)
    f1, f2 = torch.randn(9, W, generator=g), torch.randn(5, W, generator=g)  # K = 3 and K = 2
    samples = [
        Sample(spans(2), {"frame": f1, "audio": torch.randn(2, 6, generator=g)}, name="a"),
        Sample(spans(1, " a longer middle part "), {"frame": f2, "audio": torch.randn(3, 6, generator=g)}, name="b"),
    ]
    batch = processor(samples, add_generation_prompt=True)
    with torch.no_grad():
        embeds = model.embed(batch.input_ids, batch.modality_inputs)
        proj, lengths = model.get_modality_features("frame", batch.modality_inputs["frame"])  # (2, 3, D)
        assert lengths.tolist() == [3, 2]
        for row, (feat, k) in enumerate([(f1, 3), (f2, 2)]):
            alone, _ = model.get_modality_features("frame", model_inputs(feat))
            torch.testing.assert_close(proj[row, :k], alone[0])  # padding in the batch changes nothing
            pos = (batch.input_ids[row] == processor.placeholder_ids["frame"]).nonzero()[:, 0]
            assert len(pos) == k and pos[-1] - pos[-2] > 1  # two runs: k - 1 patch tokens, then the CLS token
            first, cls = pos[: k - 1], pos[k - 1]
            assert torch.equal(embeds[row, first], proj[row, : k - 1])
            assert torch.equal(embeds[row, cls], proj[row, k - 1])
            assert not torch.equal(proj[row, k - 1], proj[row, 0])


def model_inputs(feat):
    from emollm.model.modeling import ModalityInputs

    return ModalityInputs(feat[None], torch.tensor([feat.shape[0]]), torch.tensor([0]))


def test_missing_modality_with_spans_spends_no_tokens():
    _, processor = frame_model()
    text = processor.render(Sample(spans(256), {"frame": None, "audio": torch.randn(2, 6)}))[0]["content"]
    assert processor.placeholders["frame"] not in text and text.startswith("before  middle ")


def _user(*parts):
    return [{"role": "user", "content": [{"type": "text", "text": "x "}, *parts]}]


@pytest.mark.parametrize(
    ("parts", "match"),
    [
        ([{"type": "frame", "span": [1, None]}], r"starts at 1, but the frame spans before it cover \[0, 0\)"),
        (
            [{"type": "frame", "span": [0, 2]}, {"type": "frame", "span": [1, None]}],
            r"starts at 1, but the frame spans before it cover \[0, 2\).*without gaps or overlaps",
        ),
        (
            [{"type": "frame", "span": [0, 1]}, {"type": "frame", "span": [2, None]}],
            r"starts at 2, but the frame spans before it cover \[0, 1\)",
        ),
        ([{"type": "frame", "span": [0, 2]}], r"the frame spans cover \[0, 2\) of 3 tokens; the last span must end"),
        ([{"type": "frame", "span": [0, 4]}], r"span \[0, 4\]: the frame input has only 3 tokens"),
        ([{"type": "frame", "span": [0, 3]}, {"type": "frame", "span": [3, None]}], "already placed up to its last"),
        ([{"type": "frame", "span": [0, 1]}, {"type": "frame", "span": [1, 5]}], "the frame input has only 3 tokens"),
        ([{"type": "frame", "span": [0, None]}, {"type": "frame", "span": [3, 4]}], "already placed up to its last"),
        ([{"type": "frame"}, {"type": "frame", "span": [0, 1]}], "already placed up to its last"),
        ([{"type": "frame", "span": [0, 1]}, {"type": "frame"}], "refers to 'frame' twice.*give every frame part"),
        ([{"type": "frame"}, {"type": "frame"}], "refers to 'frame' twice; one input per modality"),
        ([{"type": "frame", "span": [2, 1]}], "end must be greater than start"),
        ([{"type": "frame", "span": [0]}], r"a span is \[start, end\]"),
        ([{"type": "frame", "span": ["0", 2]}], r"a span is \[start, end\]"),
        ([{"type": "frame", "span": [-1, 2]}], r"a span is \[start, end\]"),
    ],
)
def test_bad_spans_name_the_sample(parts, match):
    _, processor = frame_model()
    sample = Sample(_user(*parts), {"frame": torch.randn(9, W)}, name="clip7")
    with pytest.raises(ValueError, match=f"sample 'clip7'.*{match}"):
        processor.render(sample)


def test_frame_projector_formula():
    """[CLS, p1..pN] -> [Linear(cat(p1..p4)), Linear(cat(p5..p8)), ..., Linear_cls(CLS)], row by row."""
    proj = build_projector("emotion_llama_frame", 3, 5, merge=4).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 3, generator=g)  # row 0: CLS + 8 patches; row 1: CLS + 3 patches (+ padding)
    x[1, 4:] = float("nan")
    tokens, lengths = proj(x, torch.tensor([9, 4]))
    assert lengths.tolist() == [3, 2] and tokens.shape == (2, 3, 5)
    wp, bp = proj.patch_proj.weight, proj.patch_proj.bias
    wc, bc = proj.cls_proj.weight, proj.cls_proj.bias
    assert wp.shape == (5, 12) and wc.shape == (5, 3)
    row0 = torch.stack([x[0, 1:5].reshape(-1) @ wp.T + bp, x[0, 5:9].reshape(-1) @ wp.T + bp, x[0, 0] @ wc.T + bc])
    row1 = torch.cat([x[1, 1:4].reshape(-1), torch.zeros(3)]) @ wp.T + bp  # a short last group is zero-padded
    torch.testing.assert_close(tokens[0], row0)
    torch.testing.assert_close(tokens[1, 0], row1)
    torch.testing.assert_close(tokens[1, 1], x[1, 0] @ wc.T + bc)  # CLS right after the row's own patches
    assert torch.equal(tokens[1, 2], torch.zeros(5))  # padding at the end
    only_cls, n = proj(x[:1, :1], torch.tensor([1]))
    assert n.tolist() == [1] and torch.allclose(only_cls[0, 0], row0[2])
