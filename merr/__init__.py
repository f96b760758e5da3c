"""MERR construction: OpenFace AUs -> peak frame -> AU pseudo-label -> clues -> reasoning -> Emotion-LLaMA files.

The repo folder ``merr/`` installs as ``emollm_merr``. Importing it needs numpy + pyyaml only; torch/transformers
load lazily when a model stage runs. Modules: ``au`` (read/run OpenFace), ``peaks`` (peak frame), ``cues`` (AU
combination -> pseudo-label, AU phrases), ``fer`` (FER fallback of stage 1), ``describe`` (clue describer registry;
the describers in ``clue``, ``describe_offline``, ``describe_models``, the audio measurement in
``audio_measures``), ``reason`` (LLM reasoning, cache), ``filter`` (contradiction, dedup, balance, neutral,
confidence), ``review`` (human-in-the-loop CSV), ``pipeline`` (the cached, resumable ``emollm merr build``; its steps
in ``stages``, its files in ``export``, its split over ``torchrun`` ranks in ``parallel``, its cache in
:mod:`emollm.utils.stage_cache`), ``config`` (its typed YAML config), ``cli`` (``emollm merr``). The MERR record
schema and Emotion-LLaMA's JSON/TXT/CSV files are library code (:mod:`emollm.data.merr_schema`,
:mod:`emollm.data.merr_files`), as are the prompts (:mod:`emollm.model.prompts`).

Example:
    >>> from emollm_merr import load_build_config, run_build
    >>> result = run_build(load_build_config("configs/merr/build.yaml", ["inputs.video_dir=clips"]))  # doctest: +SKIP
    >>> print(result.table())  # doctest: +SKIP
"""

from emollm.apps.reasoning import LLMReasoner, ReasoningClient
from emollm.aus.cues import CueResult, CueTable, describe_aus, label_csv, label_from_peak, load_cue_table
from emollm.aus.openface import AUSequence, NoFaceError, OpenFaceRunner, read_openface_csv
from emollm.aus.peaks import PeakResult, find_peaks_chronological, select_peak
from emollm.data.merr_files import (
    find_video,
    read_label_txt,
    read_merr_json,
    read_transcriptions_csv,
    write_label_txt,
    write_merr_json,
    write_transcriptions_csv,
)
from emollm.data.merr_schema import LABELS, LabelRow, MERRExtras, MERRRecord
from emollm_merr.config import BuildConfig, BuildConfigError, load_build_config
from emollm_merr.describe import ClipContext, Clue, Describer, FERFallbackAU, MeasuredAudioDescriber, build_describer
from emollm_merr.pipeline import BuildResult, MERRBuilder, run_build
from emollm_merr.review import export_review, import_review

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
