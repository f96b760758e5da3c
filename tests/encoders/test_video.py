"""Frame towers against the transformers models they wrap."""

from __future__ import annotations

import numpy as np
import torch

from emollm.encoders import build_encoder
from emollm.encoders._common import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImageTransform
from tests.encoders.conftest import frame_batch


def test_clip_tokens_match_transformers(tiny_dirs):
    from transformers import CLIPModel

    path = tiny_dirs("clip")
    ref = CLIPModel.from_pretrained(path).eval()
    pooled = build_encoder("clip", path=path, feature_dim=32)
    projected = build_encoder("clip", path=path, feature_dim=24, tokens="projected")
    patch = build_encoder("clip", path=path, feature_dim=32, tokens="patch")
    x, lens = frame_batch([2], size=48)
    pixels = pooled.transform(x[0].permute(0, 3, 1, 2).float() / 255)  # (2, 3, 32, 32)
    with torch.no_grad():
        vision = ref.vision_model(pixel_values=pixels, output_hidden_states=True)
        torch.testing.assert_close(pooled(x, lens)[0][0], vision.pooler_output, atol=1e-5, rtol=1e-5)
        image_embeds = ref.visual_projection(vision.pooler_output)
        torch.testing.assert_close(projected(x, lens)[0][0], image_embeds, atol=1e-5, rtol=1e-5)
        patches, plens = patch(x, lens)
    assert plens.tolist() == [2 * 16] == [patch.num_tokens(2)]
    torch.testing.assert_close(patches[0].view(2, 16, 32), vision.hidden_states[-2][:, 1:], atol=1e-5, rtol=1e-5)


def test_siglip_patch_tokens_have_no_cls(tiny_dirs):
    enc = build_encoder("clip", path=tiny_dirs("siglip"), tokens="patch", select_layer=-1)
    assert enc.is_siglip and enc.num_tokens(1) == 16
    x, lens = frame_batch([1], size=32)
    with torch.no_grad():
        pixels = enc.transform(x[0].permute(0, 3, 1, 2).float() / 255)
        out = enc.model(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]  # before post_layernorm
        torch.testing.assert_close(enc(x, lens)[0], out, atol=1e-5, rtol=1e-5)


def test_image_transform_matches_clip_image_processor():
    from transformers import CLIPImageProcessor

    image = np.random.RandomState(0).randint(0, 256, (90, 140, 3), dtype=np.uint8)
    ref = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})(
        image, return_tensors="pt"
    ).pixel_values
    mine = ImageTransform(shortest_edge=64, crop=(64, 64), mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)(
        torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    )
    assert mine.shape == ref.shape
    assert (mine - ref).abs().mean() < 0.02  # PIL-style uint8 rounding aside, the same resize/crop/normalise


def test_videomae_clips_and_last_frame_repeat(tiny_dirs):
    enc = build_encoder("videomae", path=tiny_dirs("videomae"), feature_dim=32)
    assert enc.clip_frames == 4 and [enc.num_tokens(n) for n in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]
    x, lens = frame_batch([6], size=32)
    frames = x[0].permute(0, 3, 1, 2).float() / 255  # (6, 3, 32, 32)
    with torch.no_grad():
        feats, out = enc(x, lens)
        second = torch.stack([frames[4], frames[5], frames[5], frames[5]])  # the short clip repeats its last frame
        pixels = torch.stack([enc.transform(frames[:4]), enc.transform(second)])  # (2, 4, 3, 32, 32)
        ref = enc.model(pixel_values=pixels).last_hidden_state.mean(1)
    assert out.tolist() == [2]
    torch.testing.assert_close(feats[0], ref, atol=1e-5, rtol=1e-5)
    patch = build_encoder("videomae", path=tiny_dirs("videomae"), tokens="patch")
    assert patch.num_tokens(6) == 2 * (4 // 2) * 16
