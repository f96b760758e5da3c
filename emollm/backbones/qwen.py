"""Qwen2 / Qwen2.5, Qwen3 and Qwen3.5 instruct: registry entries and chat formats.

Qwen2.5 uses the shared ChatML (with its default system message). Qwen3 and Qwen3.5 are ChatML plus think blocks:
an assistant turn after the last user query carries ``<think>\\n{reasoning}\\n</think>\\n\\n`` (empty when the answer
has no reasoning), and ``enable_thinking=False`` puts the empty block after the generation prompt. That placement is
logic, not data, so it lives in the small :class:`QwenThinkFormat` below.

Placeholder tokens: the Qwen vocabularies have no spare *named* tokens, but their embedding matrices are padded past
the tokenizer (Qwen2.5-7B: 152,064 rows, Qwen3: 151,936 rows, for 151,665 / 151,669 tokens), so the added
``<|emo_*|>`` tokens land in never-trained padding rows and nothing is resized. Qwen3.5's matrix has 248,320 rows; its
tokenizer is not available offline to count, so that it is padded too is expected, not checked (``fit_embeddings``
resizes if it is not).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emollm.backbones.chat import TurnFormat


@dataclass(frozen=True)
class QwenThinkFormat(TurnFormat):
    """ChatML with Qwen3's think blocks (see the module docstring).

    An answer written as ``<think>reasoning</think>answer`` is split as the template splits it; the reasoning is kept
    only for turns after the last user query, and is then trained together with the answer. The empty block the
    template writes for a plain answer is outside the loss (the ``enable_thinking=False`` generation prompt writes it
    too).

    Attributes:
        think_after_query: Which answers after the last user query get a think block: ``"last_or_reasoning"`` (Qwen3:
            the final message, or any with reasoning) or ``"all"`` (Qwen3.5).
        reasoning_strip: Characters stripped from the reasoning (``"\\n"``: Qwen3's ``strip('\\n')``; ``None``: any
            whitespace, Qwen3.5's ``trim``).
    """

    think_after_query: str = field(default="last_or_reasoning", kw_only=True)
    reasoning_strip: str | None = field(default="\n", kw_only=True)

    @staticmethod
    def _last_query(turns: list[tuple[str, str]], strip: bool) -> int:
        """Index of the last user turn that is not a wrapped tool response (the template's ``last_query_index``)."""
        for i in range(len(turns) - 1, -1, -1):
            role, content = turns[i]
            text = content.strip() if strip else content
            if role == "user" and not (text.startswith("<tool_response>") and text.endswith("</tool_response>")):
                return i
        return len(turns) - 1

    def _answer(self, content: str, index: int, turns: list[tuple[str, str]]) -> tuple[str, str]:
        content = self._clean(content)
        reasoning = ""
        if "</think>" in content:
            reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
            content = content.split("</think>")[-1].lstrip("\n")
        reasoning = reasoning.strip(self.reasoning_strip)
        after_query = index > self._last_query(turns, self.strip)
        wants_block = self.think_after_query == "all" or index == len(turns) - 1 or bool(reasoning)
        if not (after_query and wants_block):
            return "", content
        content = content.lstrip("\n")
        if not reasoning:
            return "<think>\n\n</think>\n\n", content
        return "", f"<think>\n{reasoning}\n</think>\n\n{content}"


#: What the Qwen3 and Qwen3.5 formats share: ChatML with think blocks. emollm turns thinking off (the empty block after
#: the generation prompt), so the prompt a model answers matches the rendering of the answers it was trained on.
_QWEN_THINK = dict(
    stop_strings=("<|im_end|>", "<|endoftext|>"),
    special_tokens=("<|im_start|>", "<|im_end|>", "<think>", "</think>"),
    eos_token="<|im_end|>",
    header="<|im_start|>{role}\n",
    after_turn="\n",
    enable_thinking=False,
    thinking_default=True,
    think_off_prompt="<think>\n\n</think>\n\n",
)

#: Qwen3 (hybrid thinking: 0.6B ... 8B ... 32B share one template).
QWEN3_CHAT = QwenThinkFormat(name="qwen3", **_QWEN_THINK)

#: Qwen3.5: every content trimmed, a think block on every answer after the last query, and ``<think>\n`` opened after
#: the generation prompt when thinking is on (the template's default).
QWEN3_5_CHAT = QwenThinkFormat(
    name="qwen3_5",
    **_QWEN_THINK,
    strip=True,
    think_on_prompt="<think>\n",
    think_after_query="all",
    reasoning_strip=None,
)

CHAT_FORMATS = (QWEN3_CHAT, QWEN3_5_CHAT)  # Qwen2.5: ChatML, shared (emollm.backbones.chat.CHATML)


def _tiny_qwen3_5(cfg: dict[str, Any]) -> None:
    """Qwen3.5 at test size: the linear-attention heads shrink with the attention heads (16 x 128 by default)."""
    cfg["linear_num_key_heads"] = cfg["linear_num_value_heads"] = cfg["num_attention_heads"]
    cfg["linear_key_head_dim"] = cfg["linear_value_head_dim"] = cfg["head_dim"]


TINY_FIXES = {"qwen3_5_text": _tiny_qwen3_5}

_PADDED_ROWS = "adds <|emo_*|> tokens; they land in the embedding matrix's unused padding rows: no resize"

#: ``BackboneSpec`` fields of each entry (the registry builds the specs).
BACKBONES = (
    dict(
        name="qwen2",
        family="qwen2",
        hf_id="Qwen/Qwen2.5-7B-Instruct",
        config_url="https://huggingface.co/Qwen/Qwen2.5-7B-Instruct/blob/main/config.json",
        chat_format="chatml",
        default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        pad_candidates=("<|endoftext|>",),
        placeholder_note=_PADDED_ROWS,
        reference_config={
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "vocab_size": 152064,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            "tie_word_embeddings": False,
        },
    ),
    dict(
        name="qwen3",
        family="qwen3",
        hf_id="Qwen/Qwen3-8B",
        config_url="https://huggingface.co/Qwen/Qwen3-8B/blob/main/config.json",
        chat_format="qwen3",
        pad_candidates=("<|endoftext|>",),
        placeholder_note=_PADDED_ROWS,
        reference_config={
            "hidden_size": 4096,
            "intermediate_size": 12288,
            "num_hidden_layers": 36,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "vocab_size": 151936,
            "max_position_embeddings": 40960,
            "max_window_layers": 36,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            "attention_bias": False,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            "tie_word_embeddings": False,
        },
    ),
    dict(
        # Published as Qwen3_5ForConditionalGeneration (a VLM, model_type qwen3_5) with the text model in
        # `text_config`; emollm builds the text model, Qwen3_5ForCausalLM (model_type qwen3_5_text).
        name="qwen3_5",
        family="qwen3_5_text",
        hf_id="Qwen/Qwen3.5-0.8B",
        config_url="https://huggingface.co/Qwen/Qwen3.5-0.8B/blob/main/config.json",
        chat_format="qwen3_5",
        pad_candidates=("<|endoftext|>",),
        placeholder_note=_PADDED_ROWS,
        # Hybrid layers: Gated-DeltaNet linear attention (linear_attn.in_proj_qkv/_z/_b/_a, out_proj) on 3 of every 4
        # layers, gated full attention (self_attn.q/k/v/o_proj) on the 4th; every layer has the gated MLP.
        lora_targets=(
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "in_proj_qkv",
            "in_proj_z",
            "in_proj_b",
            "in_proj_a",
            "out_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ),
        reference_config={
            "hidden_size": 1024,
            "intermediate_size": 3584,
            "num_hidden_layers": 24,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "head_dim": 256,
            "vocab_size": 248320,
            "max_position_embeddings": 262144,
            "rms_norm_eps": 1e-6,
            "hidden_act": "silu",
            "attention_bias": False,
            "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * 6,
            "linear_conv_kernel_dim": 4,
            "linear_key_head_dim": 128,
            "linear_value_head_dim": 128,
            "linear_num_key_heads": 16,
            "linear_num_value_heads": 16,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000000.0,
                "partial_rotary_factor": 0.25,
                "mrope_section": [11, 11, 10],
                "mrope_interleaved": True,
            },
            "eos_token_id": 248044,
            "tie_word_embeddings": True,
        },
    ),
)
