"""MERR construction: OpenFace AUs -> peak frame -> AU pseudo-label -> clues -> reasoning -> Emotion-LLaMA files.

Importing ``merr`` needs numpy + pyyaml only; torch/transformers load lazily when a model stage runs. Modules:
:mod:`merr.au` (read/run OpenFace), :mod:`merr.peaks` (peak frame), :mod:`merr.cues` (AU combination ->
pseudo-label, AU phrases), :mod:`merr.describe` (clue describers, FER fallback), :mod:`merr.reason` (LLM reasoning,
prompt, cache), :mod:`merr.filter` (contradiction, dedup, balance, neutral, confidence), :mod:`merr.review`
(human-in-the-loop CSV), :mod:`merr.pipeline` (the cached, resumable ``emollm merr build``), :mod:`merr.config`
(its typed YAML config), :mod:`merr.schema` / :mod:`merr.formats` (Emotion-LLaMA JSON/TXT/CSV files),
:mod:`merr.cli` (``emollm merr``).

Example:
    >>> from merr import load_build_config, run_build
    >>> result = run_build(load_build_config("configs/merr/build.yaml", ["inputs.video_dir=clips"]))  # doctest: +SKIP
    >>> print(result.table())  # doctest: +SKIP
"""

from merr.au import AUSequence, NoFaceError, OpenFaceRunner, read_openface_csv
from merr.config import BuildConfig, BuildConfigError, load_build_config
from merr.cues import CueResult, CueTable, describe_aus, label_csv, label_from_peak, load_cue_table
from merr.describe import ClipContext, Clue, Describer, FERFallbackAU, MeasuredAudioDescriber, build_describer
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
from merr.pipeline import BuildResult, MERRBuilder, run_build
from merr.reason import LLMReasoner, ReasoningClient, build_prompt, coarse_caption
from merr.review import export_review, import_review
from merr.schema import LABELS, LabelRow, MERRExtras, MERRRecord

__all__ = [
    "LABELS",
    "AUSequence",
    "BuildConfig",
    "BuildConfigError",
    "BuildResult",
    "ClipContext",
    "Clue",
    "Describer",
    "FERFallbackAU",
    "LLMReasoner",
    "MERRBuilder",
    "MeasuredAudioDescriber",
    "ReasoningClient",
    "build_describer",
    "build_prompt",
    "coarse_caption",
    "export_review",
    "import_review",
    "load_build_config",
    "run_build",
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
