"""Classic fusion baselines on cached features: unimodal, late, intermediate, pooled, transformer and MERBench
attention fusion (``emollm fusion list``), with a small resumable trainer and a classification report.

Imports: ``data``, ``encoders`` (precomputed features) and the foundations; never the LLM model core.
"""

from emollm.fusion.data import FeatureSet, build_feature_set, load_feature_set, synthetic_task
from emollm.fusion.metrics import classification_report, confusion_matrix
from emollm.fusion.registry import FUSION_METHODS, FusionMethod, build_fusion_model, list_methods
from emollm.fusion.trainer import evaluate, predict, train_model

__all__ = [
    "FUSION_METHODS",
    "FeatureSet",
    "FusionMethod",
    "build_feature_set",
    "build_fusion_model",
    "classification_report",
    "confusion_matrix",
    "evaluate",
    "list_methods",
    "load_feature_set",
    "predict",
    "synthetic_task",
    "train_model",
]
