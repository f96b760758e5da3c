"""Importers of released third-party checkpoints (Emotion-LLaMA, MiniGPT-v2, AffectGPT v2) into emollm checkpoints.

``emollm import emotion-llama CKPT.pth --llm-path LLAMA2_CHAT_DIR [--eva-path EVA_VIT_G] --out DIR`` (see
:mod:`emollm.checkpoints.published.cli`); with ``--eva-path`` the import includes the EVA ViT-g frame branch
(260 tokens). ``emollm import affectgpt CKPT.pth [...] --llm-path QWEN25_DIR --encoder-path clip=DIR
--encoder-path hubert=DIR --out DIR``: AffectGPT's pre-fused ``<Multi>`` token, audio and face/frame tokens.

Imports: ``checkpoints``, ``model`` and the foundations.
"""

from emollm.checkpoints.published.affectgpt import (
    AFFECTGPT_SAMPLING,
    affectgpt_messages,
    affectgpt_prompt,
    import_affectgpt,
    import_affectgpt_state,
)
from emollm.checkpoints.published.emotion_llama import (
    LAYOUTS,
    SOURCES,
    build_import_model,
    emotion_llama_messages,
    import_checkpoint,
    import_state_dict,
)
from emollm.checkpoints.published.released import ImportReport, read_released_checkpoint, read_released_state_dict

__all__ = [
    "AFFECTGPT_SAMPLING",
    "LAYOUTS",
    "SOURCES",
    "ImportReport",
    "affectgpt_messages",
    "affectgpt_prompt",
    "build_import_model",
    "emotion_llama_messages",
    "import_affectgpt",
    "import_affectgpt_state",
    "import_checkpoint",
    "import_state_dict",
    "read_released_checkpoint",
    "read_released_state_dict",
]
