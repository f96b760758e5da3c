"""Facial action units: per-frame AU sequences (OpenFace 2 CSVs, or MediaPipe blendshapes via
:mod:`emollm.clues.blendshapes`), MERR's peak-frame rules and its AU-combination -> emotion table.

Shared by MERR construction (``emollm merr``) and the zero-shot clue mode (``emollm analyze``):

- :mod:`.openface`: :class:`AUSequence`, :func:`read_openface_csv`, :class:`OpenFaceRunner`;
- :mod:`.peaks`: :func:`select_peak` (the paper's rule or MER-Factory's), :class:`PeakResult`;
- :mod:`.cues`: :func:`load_cue_table` (``au_cues.yaml``, data not code), :func:`label_from_peak`,
  :func:`describe_aus`.

Imports: nothing of emollm but the foundations (the blendshape AU source lives in ``clues``, which imports this).
"""

from emollm.aus.cues import CueResult, CueTable, describe_aus, label_from_peak, load_cue_table
from emollm.aus.openface import AUSequence, NoFaceError, OpenFaceRunner, read_openface_csv
from emollm.aus.peaks import PeakResult, select_peak

__all__ = [
    "AUSequence",
    "CueResult",
    "CueTable",
    "NoFaceError",
    "OpenFaceRunner",
    "PeakResult",
    "describe_aus",
    "label_from_peak",
    "load_cue_table",
    "read_openface_csv",
    "select_peak",
]
