"""MERR construction: OpenFace AUs -> peak frame -> AU pseudo-label -> Emotion-LLaMA MERR files.

numpy + pyyaml only (no torch). Stages so far: :mod:`merr.au` (read/run OpenFace), :mod:`merr.peaks` (peak frame),
:mod:`merr.cues` (AU combination -> pseudo-label, AU phrases), :mod:`merr.schema` / :mod:`merr.formats`
(Emotion-LLaMA JSON/TXT/CSV files), :mod:`merr.cli` (``emollm merr``).
"""

from merr.au import AUSequence, NoFaceError, OpenFaceRunner, read_openface_csv
from merr.cues import CueResult, CueTable, describe_aus, label_csv, label_from_peak, load_cue_table
from merr.formats import (
    find_video,
    read_label_txt,
    read_merr_json,
    read_transcriptions_csv,
    write_label_txt,
    write_merr_json,
    write_transcriptions_csv,
)
from merr.peaks import PeakResult, find_peaks_chronological, select_peak
from merr.schema import LABELS, LabelRow, MERRExtras, MERRRecord

__all__ = [
    "LABELS",
    "AUSequence",
    "CueResult",
    "CueTable",
    "LabelRow",
    "MERRExtras",
    "MERRRecord",
    "NoFaceError",
    "OpenFaceRunner",
    "PeakResult",
    "describe_aus",
    "find_peaks_chronological",
    "find_video",
    "label_csv",
    "label_from_peak",
    "load_cue_table",
    "read_label_txt",
    "read_merr_json",
    "read_openface_csv",
    "read_transcriptions_csv",
    "select_peak",
    "write_label_txt",
    "write_merr_json",
    "write_transcriptions_csv",
]
