"""Checkpoints: the self-describing folder format (``format``), writing it (``save``), restoring its parts into a
model (``restore``), loading a ready model (``load``), exporting (``export``: merged, or for vLLM's prompt embeddings)
and importing released research checkpoints (``published``). Imports the model core and backbones; never an app.
"""

from emollm.checkpoints.export import check_export_target, cli_main, export_merged, export_spliced
from emollm.checkpoints.format import (
    ADAPTER_FILE,
    ARCH_KEYS,
    BASE_FILE,
    CONNECTORS_FILE,
    CheckpointInfo,
    check_safetensors,
    connector_parts,
    is_quantized,
    read_checkpoint,
    read_checkpoint_meta,
)
from emollm.checkpoints.load import load_model
from emollm.checkpoints.restore import PARTS, RestoreReport, restore_into
from emollm.checkpoints.save import save_checkpoint

__all__ = [
    "ADAPTER_FILE",
    "ARCH_KEYS",
    "BASE_FILE",
    "CONNECTORS_FILE",
    "PARTS",
    "CheckpointInfo",
    "RestoreReport",
    "check_export_target",
    "check_safetensors",
    "cli_main",
    "connector_parts",
    "export_merged",
    "export_spliced",
    "is_quantized",
    "load_model",
    "read_checkpoint",
    "read_checkpoint_meta",
    "restore_into",
    "save_checkpoint",
]
