"""Face detection on real photos (Haar and MTCNN), main-face tracking, cropping."""

from __future__ import annotations

import numpy as np
import pytest

from emollm.media import (
    Box,
    FaceDetector,
    NoFaceFound,
    build_face_detector,
    crop_faces,
    detect_faces,
    read_frames,
    sample_frame_indices,
    track_main_face,
)
from emollm.media.faces import batched_nms_numpy
from emollm.media.fixtures import PHOTO_FACE_BOXES, load_photo


def as_box(t) -> Box:
    return Box(*t)


@pytest.mark.parametrize("photo", ["astronaut", "grace_hopper"])
@pytest.mark.parametrize("detector", ["haar", "mtcnn"])
def test_detects_the_face_in_real_photos(photo, detector, request):
    det = request.getfixturevalue("haar" if detector == "haar" else "mtcnn")
    assert isinstance(det, FaceDetector)
    boxes = det.detect(load_photo(photo))
    truth = as_box(PHOTO_FACE_BOXES[photo])
    assert max(b.iou(truth) for b in boxes) > 0.5


@pytest.mark.parametrize("detector", ["haar", "mtcnn"])
def test_track_follows_the_moving_face(media, detector, request):
    det = request.getfixturevalue(detector)
    clip = media["astronaut"]
    idx = sample_frame_indices(clip.frames, "uniform:6")
    frames = read_frames(clip.path, idx)
    track = track_main_face(detect_faces(det, frames), (320, 240))
    assert len(track) == 6 and sum(track.detected) >= 5
    for t, i in enumerate(idx):
        assert track.boxes[t].iou(as_box(clip.face_boxes[i])) > 0.5


@pytest.mark.parametrize("detector", ["haar", "mtcnn"])
def test_main_face_is_the_large_central_one(media, detector, request):
    det = request.getfixturevalue(detector)
    clip = media["two_faces"]
    idx = sample_frame_indices(clip.frames, "uniform:4")
    boxes = detect_faces(det, read_frames(clip.path, idx))
    assert all(len(b) == 2 for b in boxes)  # both faces are found ...
    track = track_main_face(boxes, clip.size)
    assert track.num_tracks == 2
    for t, i in enumerate(idx):  # ... and the main (large, central) one is kept
        assert track.boxes[t].iou(as_box(clip.face_boxes[i])) > 0.5
        assert track.boxes[t].iou(as_box(clip.other_boxes[i])) == 0.0


def test_no_face_clip(media, haar, mtcnn):
    frames = read_frames(media["no_face"].path, list(range(10)))
    for det in (haar, mtcnn):
        boxes = detect_faces(det, frames)
        assert not any(boxes)
        with pytest.raises(NoFaceFound, match="no_face.mp4.*no face detected in 10 sampled frames"):
            track_main_face(boxes, (320, 240), source=str(media["no_face"].path))


def test_tracking_rules():
    big_centre = Box(40, 30, 80, 80, 0.9)
    big_edge = Box(0, 0, 45, 55, 0.99)  # slightly larger but in the corner
    blip = Box(60, 60, 70, 70)  # one-frame false positive
    frames = [[big_centre, big_edge], [big_edge.scaled(1.0), blip], [], [Box(44, 30, 84, 80), big_edge]]
    frames[1].append(Box(42, 30, 82, 80))
    track = track_main_face(frames, (160, 120))
    assert track.num_tracks == 3 and track.detected == [True, True, False, True]
    assert track.boxes[0] == big_centre
    assert track.boxes[2].x0 == pytest.approx(43.0) and track.boxes[2].x1 == pytest.approx(83.0)  # interpolated
    held = track_main_face([[], [big_centre], []], (160, 120))
    assert held.boxes == [big_centre] * 3 and held.detected == [False, True, False]


def test_area_beats_centrality_when_much_larger():
    small_centre = Box(75, 55, 85, 65)
    large_off = Box(0, 0, 60, 60)
    assert track_main_face([[small_centre, large_off]], (160, 120)).boxes[0] == large_off


def test_crop_faces_shape_margin_and_padding():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[40:60, 90:110] = 255  # a white 20x20 "face"
    track = track_main_face([[Box(90, 40, 110, 60)], [Box(0, 0, 20, 20)]], (200, 100))
    crops = crop_faces(np.stack([frame, frame]), track, size=64, margin=0.5)
    assert crops.shape == (2, 64, 64, 3) and crops.dtype == np.uint8
    # 40 px window, face in the middle half
    assert crops[0, 24:40, 24:40].min() > 200 and crops[0, :8].max() == 0
    with pytest.raises(ValueError, match="3 frames but the track has 2"):
        crop_faces(np.stack([frame] * 3), track)


def test_numpy_nms_matches_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.ops import batched_nms

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (300, 2))
    wh = rng.uniform(5, 40, (300, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    ids = rng.integers(0, 3, 300)
    ours = batched_nms_numpy(boxes, scores, ids, 0.5)
    ref = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(ids), 0.5).numpy()
    assert ours.tolist() == ref.tolist()


def test_build_face_detector():
    assert build_face_detector("haar").name == "haar"
    with pytest.raises(ValueError, match="unknown face detector 'dlib'"):
        build_face_detector("dlib")


def test_mtcnn_nms_fallback_is_swapped_in_when_torchvision_ops_fail():
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from emollm.media.faces import _ensure_nms

    def broken(*_args):
        raise RuntimeError("operator torchvision::nms does not exist")

    fake = SimpleNamespace(batched_nms=broken)
    _ensure_nms(fake)
    assert fake.batched_nms is not broken
    boxes = torch.tensor([[0.0, 0.0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    keep = fake.batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3, dtype=torch.int64), 0.5)
    assert keep.tolist() == [0, 2] and keep.dtype == torch.int64
    working = SimpleNamespace(batched_nms=lambda *a: torch.zeros(1, dtype=torch.int64))
    original = working.batched_nms
    _ensure_nms(working)
    assert working.batched_nms is original
