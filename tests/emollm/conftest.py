"""Tiny random-weight models of the real transformers classes, one per registry backbone."""

from __future__ import annotations

import pytest

from emollm.backbones import get_backbone, get_chat_format
from emollm.model.configuration import ModalityConfig, ProjectorConfig
from emollm.model.factory import build_model
from emollm.testing import build_tiny_tokenizer, load_gguf_tokenizer


def tiny_modalities() -> dict[str, ModalityConfig]:
    """Three branches with different widths and projector kinds."""
    return {
        "audio": ModalityConfig(feature_dim=24, projector=ProjectorConfig(kind="linear")),
        "face": ModalityConfig(feature_dim=16, projector=ProjectorConfig(kind="mlp2x_gelu")),
        "video": ModalityConfig(
            feature_dim=20, projector=ProjectorConfig(kind="attn_pool", num_queries=2, num_heads=2)
        ),
    }


def tiny_tokenizer(backbone: str):
    spec = get_backbone(backbone)
    extras: list[str] = []
    if spec.placeholder_token_policy == "reserved":  # a LLaMA-3 vocabulary has these tokens already
        extras += list(spec.placeholder_tokens().values())
    extras += [t for t in spec.pad_candidates if t.startswith("<|")]
    return build_tiny_tokenizer(get_chat_format(spec.chat_format), extra_special_tokens=extras)


def make_tiny(backbone: str = "llama2", modalities=None, **kwargs):
    """(model, processor) with a 2-layer, hidden-64 random LLM of the backbone's real class."""
    spec = get_backbone(backbone)
    tok = tiny_tokenizer(backbone)
    text_config = spec.text_config(n_layers=2, hidden=64, vocab_size=len(tok))
    return build_model(
        backbone,
        tiny_modalities() if modalities is None else modalities,
        text_config=text_config,
        tokenizer=tok,
        **kwargs,
    )


@pytest.fixture
def tiny():
    return make_tiny


# ------------------------------------------------------------------------------------------------------------------
# Real vocabularies (llama.cpp's vocab-only GGUFs, `make test-assets`), converted once per machine and cached; loading
# them is the slow part of the chat-format tests, hence session scope.


def _gguf(test_assets, name: str):
    path = test_assets / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make test-assets` (scripts/fetch_test_assets.sh) to complete the cache")
    return path


@pytest.fixture(scope="session")
def llama2_tokenizer(test_assets):
    return load_gguf_tokenizer(_gguf(test_assets, "ggml-vocab-llama-spm.gguf"))


@pytest.fixture(scope="session")
def llama3_tokenizer(test_assets):
    return load_gguf_tokenizer(_gguf(test_assets, "ggml-vocab-llama-bpe.gguf"))


@pytest.fixture(scope="session")
def qwen2_tokenizer(test_assets):
    return load_gguf_tokenizer(_gguf(test_assets, "ggml-vocab-qwen2.gguf"))


@pytest.fixture(scope="session")
def gemma4_tokenizer(test_assets):
    return load_gguf_tokenizer(_gguf(test_assets, "ggml-vocab-gemma-4.gguf"))
