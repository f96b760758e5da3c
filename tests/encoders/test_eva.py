"""``eva_vitg``: the EVA ViT-g frame encoder of MiniGPT-v2 / Emotion-LLaMA, at tiny width, against the released
pipeline written out in ``tests/encoders/eva_reference.py`` (PIL preprocessing, LAVIS position interpolation, EVA
blocks by hand, non-affine ``ln_vision``)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from emollm.encoders import ENCODERS, build_encoder
from emollm.encoders.eva import preprocess_frames
from tests.encoders.conftest import TINY_EVA_ARGS
from tests.encoders.eva_reference import lavis_pos_embed, released_eva_tokens, released_pixels

HEADS = TINY_EVA_ARGS["num_heads"]


def _frames(*sizes: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]


@pytest.fixture(scope="module")
def eva(tiny_dirs):
    folder = tiny_dirs("eva")
    return folder, build_encoder("eva_vitg", feature_dim=32, path=folder), load_file(str(folder / "model.safetensors"))


def test_registry_entry_reads_the_first_frame_of_a_clip():
    entry = ENCODERS["eva_vitg"]
    assert entry.input == "video" and entry.media == {"frame_policy": "first", "max_side": None}


@pytest.mark.parametrize("size", [(37, 53), (500, 300), (448, 448)])
def test_preprocessing_is_the_released_transform(size):
    (frame,) = _frames(size)
    ours = preprocess_frames(torch.from_numpy(frame)[None])
    assert torch.equal(ours, released_pixels(frame))  # bit for bit: the same PIL resize, ToTensor and Normalize
    channels_first = preprocess_frames(torch.from_numpy(frame).permute(2, 0, 1)[None])
    as_float = preprocess_frames(torch.from_numpy(frame)[None].float() / 255)
    assert torch.equal(channels_first, ours) and torch.equal(as_float, ours)
    assert ours.shape == (1, 3, 448, 448) and ours.abs().max() > 1.5  # normalised, not [0, 1]


def test_position_grid_is_resized_like_lavis(eva):
    _, enc, sd = eva
    pos = enc.model.pos_embed.detach()
    assert pos.shape == (1, 1 + 32 * 32, 32) and enc.model.patch_embed.img_size == (448, 448)
    torch.testing.assert_close(pos, lavis_pos_embed(sd["pos_embed"], 32), rtol=0, atol=1e-6)
    assert torch.equal(pos[:, 0], sd["pos_embed"][:, 0])  # CLS position kept
    from timm.layers import resample_abs_pos_embed

    antialiased = resample_abs_pos_embed(sd["pos_embed"], new_size=[32, 32], old_size=[16, 16], antialias=True)
    assert (antialiased - pos).abs().max() > 1e-3  # timm's default (antialiased, a=-0.5) would not be the release


def test_tokens_equal_the_released_forward(eva):
    _, enc, sd = eva
    frames = _frames((60, 80), (60, 80), (60, 80), seed=1)
    clip = torch.from_numpy(np.stack(frames))  # (T, H, W, 3)
    other = clip.clone()
    other[1:] = 255 - other[1:]  # later frames differ: only the first counts
    with torch.no_grad():
        feats, lengths = enc(torch.stack([clip, other]), torch.tensor([3, 2]))
    assert feats.shape == (2, 1025, 32) and lengths.tolist() == [1025, 1025] == [enc.num_tokens(3)] * 2
    ref = released_eva_tokens(sd, frames[0], heads=HEADS)  # blocks 0..1 of 3, no final norm
    torch.testing.assert_close(feats[:1], ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(feats[0], feats[1])
    full = released_eva_tokens(sd, frames[0], heads=HEADS, num_blocks=3)
    assert (full - ref).abs().max() > 1e-2  # the dropped last block matters
    ln = feats[0].float()
    torch.testing.assert_close(ln.mean(-1), torch.zeros(1025), rtol=0, atol=1e-5)  # non-affine LayerNorm
    torch.testing.assert_close(ln.var(-1, unbiased=False), torch.ones(1025), rtol=0, atol=1e-3)


def test_cached_tokens_pass_through(eva):
    """What ``features extract`` cached from this encoder goes back through it unchanged (eval reads feature
    folders); anything shaped otherwise is refused with the expected shape."""
    _, enc, _ = eva
    clip = torch.from_numpy(np.stack(_frames((60, 80), seed=2)))[None]
    with torch.no_grad():
        feats, lengths = enc(clip, torch.tensor([1]))
        again, again_lengths = enc(feats, lengths)
    assert torch.equal(again, feats) and torch.equal(again_lengths, lengths)
    assert enc.num_tokens(feats.shape[1]) == feats.shape[1]  # a cached sample spends the same tokens as its clip
    with pytest.raises(ValueError, match=r"\(B, 1025, 32\) tokens of this encoder"):
        enc(feats[:, :-1], lengths - 1)


@pytest.mark.parametrize("options", [{"num_blocks": 3}, {"num_blocks": 1, "image_size": 224}])
def test_options_pick_blocks_and_size(tiny_dirs, options):
    folder = tiny_dirs("eva")
    enc = build_encoder("eva_vitg", feature_dim=None, path=folder, **options)
    (frame,) = _frames((50, 70), seed=2)
    size = options.get("image_size", 448)
    with torch.no_grad():
        feats, _ = enc(torch.from_numpy(frame)[None, None], torch.tensor([1]))
    sd = load_file(str(folder / "model.safetensors"))
    ref = released_eva_tokens(sd, frame, heads=HEADS, image_size=size, num_blocks=options["num_blocks"])
    assert feats.shape == (1, 1 + (size // 14) ** 2, 32) == ref.shape
    torch.testing.assert_close(feats, ref, rtol=1e-4, atol=1e-4)


def test_frozen_and_in_eval_mode(eva):
    _, enc, _ = eva
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.model.training
    assert len(enc.model.blocks) == 2 and isinstance(enc.model.norm, torch.nn.Identity)


def test_weight_files_of_timm_lavis_and_open_clip_load_alike(eva, tmp_path):
    """A bare file in timm's layout, LAVIS's eva_vit_g.pth layout (same names, 39-block-style: no last block, no
    norm or head) and open_clip's EVA01-g-14 layout (``visual.trunk.*`` beside the text tower)."""
    _, enc, sd = eva
    (frame,) = _frames((40, 40), seed=3)
    x = torch.from_numpy(frame)[None, None]
    with torch.no_grad():
        want, _ = enc(x, torch.tensor([1]))
    timm_file = tmp_path / "eva.safetensors"
    save_file(sd, timm_file)
    lavis = {k: v for k, v in sd.items() if not k.startswith(("blocks.2.", "norm.", "head."))}
    torch.save(lavis, tmp_path / "eva_vit_g.pth")
    clip = {f"visual.trunk.{k}": v for k, v in sd.items()}
    clip.update({"visual.head.proj.weight": torch.zeros(8, 32), "text.token_embedding.weight": torch.zeros(10, 8)})
    torch.save({"state_dict": clip}, tmp_path / "open_clip_pytorch_model.bin")
    for file in ("eva.safetensors", "eva_vit_g.pth", "open_clip_pytorch_model.bin"):
        other = build_encoder("eva_vitg", feature_dim=32, path=tmp_path / file, model_args=TINY_EVA_ARGS)
        with torch.no_grad():
            got, _ = other(x, torch.tensor([1]))
        assert torch.equal(got, want), file


def _write_folder(path, sd, architecture="eva_giant_patch14_clip_224"):
    path.mkdir()
    cfg = {"architecture": architecture, "num_classes": 16, "model_args": TINY_EVA_ARGS, "pretrained_cfg": {}}
    (path / "config.json").write_text(json.dumps(cfg))
    save_file(sd, path / "model.safetensors")
    return path


def test_clear_errors(eva, tmp_path):
    folder, _, sd = eva
    with pytest.raises(FileNotFoundError, match=r"--eva-path.*never downloads weights"):
        build_encoder("eva_vitg", feature_dim=32, path=None)
    with pytest.raises(FileNotFoundError, match=r"--eva-path\) .*nope does not exist"):
        build_encoder("eva_vitg", feature_dim=32, path=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds none of model.safetensors"):
        build_encoder("eva_vitg", feature_dim=32, path=tmp_path / "empty")
    broken = {k: v for k, v in sd.items() if k != "blocks.1.attn.qkv.weight"}
    with pytest.raises(ValueError, match=r"missing \['blocks\.1\.attn\.qkv\.weight'\]"):
        build_encoder("eva_vitg", feature_dim=32, path=_write_folder(tmp_path / "broken", broken))
    with pytest.raises(ValueError, match="not an EVA01 ViT"):
        build_encoder("eva_vitg", feature_dim=32, path=_write_folder(tmp_path / "vit", sd, "vit_tiny_patch16_224"))
    with pytest.raises(ValueError, match="unknown encoder_options \\['pooling'\\]"):
        build_encoder("eva_vitg", feature_dim=32, path=folder, pooling="frame")
    for bad in ({"num_blocks": 0}, {"num_blocks": 4}):
        with pytest.raises(ValueError, match=r"num_blocks must be an int in \[1, 3\]"):
            build_encoder("eva_vitg", feature_dim=32, path=folder, **bad)
    with pytest.raises(ValueError, match="image_size must be a positive multiple of the patch size 14"):
        build_encoder("eva_vitg", feature_dim=32, path=folder, image_size=100)
    torch.save({"model": argparse.Namespace(a=1)}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match=r"pickled\.pth cannot be read with torch\.load\(weights_only=True\)"):
        build_encoder("eva_vitg", feature_dim=32, path=tmp_path / "pickled.pth", model_args=TINY_EVA_ARGS)
    with pytest.raises(ValueError, match="needs at least one frame"):
        build_encoder("eva_vitg", feature_dim=32, path=folder).num_tokens(0)
