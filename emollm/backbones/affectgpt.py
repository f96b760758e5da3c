"""AffectGPT v2 (ICML 2025): Qwen2.5-7B-Instruct as the release prompts it: its ``###Human: ... ###Assistant: ``
layout, its five ``<XHere>`` placeholder tokens, ``bos = <|im_start|>`` and ``pad = eos``.

The entry exists so an imported AffectGPT checkpoint (``emollm import affectgpt``) describes itself exactly and so the
same tokenisation can be trained from YAML (``model.backbone: affectgpt``). Facts from ``my_affectgpt/models/
tokenizer.py``, ``datasets/datasets/base_dataset.py`` and ``conversation/conversation_video.py`` (upstream fffca79):

- The tokenizer adds ``<ImageHere> <AudioHere> <FrameHere> <FaceHere> <MultiHere>`` one at a time (ids 151665-151669
  on Qwen2.5) and does **not** resize the embeddings (Qwen2.5's matrix has 152064 rows); placeholder rows are never
  read, the model overwrites those positions. ``<FrameHere>`` carries emollm's ``video`` (the clip's frames through
  CLIP), ``<FaceHere>`` ``face``, ``<AudioHere>`` ``audio``, ``<MultiHere>`` the fused ``multi`` slot and
  ``<ImageHere>`` ``frame`` (a single image).
- Text is tokenised without special tokens, prompt and answer apart. Training sequences are ``<|im_start|>`` +
  prompt + answer ``###`` + ``<|im_end|>`` with the loss on answer, ``###`` and eos; at inference the release
  prepends **no** bos (a train/inference difference of the release, kept: :class:`HumanAssistantFormat` writes bos
  only for a conversation that ends with an answer).
- Generation stops on eos or on ``###`` as the release detects it (the token of ``###``, or ``##`` + ``#`` /
  ``#`` + ``##``), and the answer is cut at its last ``###`` and after ``Assistant:``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emollm.backbones import qwen
from emollm.backbones.chat import ChatFormat, _Builder

__all__ = ["AFFECTGPT_CHAT", "AFFECTGPT_PLACEHOLDERS", "BACKBONES", "CHAT_FORMATS", "HumanAssistantFormat"]


@dataclass(frozen=True)
class HumanAssistantFormat(ChatFormat):
    """``###Human: {user} ###Assistant: {answer}###`` (AffectGPT / MiniGPT-4 style), as AffectGPT v2 renders it.

    A training conversation (ending with an answer) is ``bos`` + turns + ``eos``, the loss on each answer with its
    ``###`` and on the final eos; a generation prompt has no bos and ends with ``###Assistant: `` (trailing space). A
    system message, which the release never uses, is written as a line before the first ``###Human: ``.

    Attributes:
        human: Opens a user turn.
        assistant: Closes a user turn and opens the answer.
        answer_end: Written after each answer (trained).
    """

    human: str = field(default="###Human: ", kw_only=True)
    assistant: str = field(default=" ###Assistant: ", kw_only=True)
    answer_end: str = field(default="###", kw_only=True)

    def _render(
        self, b: _Builder, turns: list[tuple[str, str]], *, add_generation_prompt: bool, bos: str, eos: str
    ) -> None:
        system = turns[0][1] if turns[0][0] == "system" else None
        turns = turns[1:] if system is not None else turns
        answered = turns[-1][0] == "assistant"
        if answered:  # training: the collater's [bos] + prompt + target; inference prompts have no bos
            b.add(bos)
        if system is not None:
            b.add(system + "\n")
        for i, (role, content) in enumerate(turns):
            if role == "user":
                b.add(self.human + content + self.assistant)
            else:
                b.add(content + self.answer_end + (eos if i == len(turns) - 1 else ""), train=True)

    def stop_token_sequences(self, tokenizer: Any) -> list[list[int]]:
        """The release's stops besides eos: ``tok('###')[0]``, and ``[tok('a##')[1], tok('a#')[1]]`` both ways."""

        def ids(text: str) -> list[int]:
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])

        three, two, one = ids("###"), ids("a##"), ids("a#")
        out = [three[:1]] if three else []
        if len(two) > 1 and len(one) > 1:
            out += [[two[1], one[1]], [one[1], two[1]]]
        return out

    def clean_answer(self, text: str) -> str:
        """``rsplit('###', 1)[0]``, then the text after the last ``Assistant:``, stripped (``answer_sample``)."""
        return text.rsplit(self.answer_end, 1)[0].split("Assistant:")[-1].strip()


AFFECTGPT_CHAT = HumanAssistantFormat(
    name="affectgpt",
    stop_strings=("<|im_end|>", "<|endoftext|>"),  # eos, and Qwen2.5's generation_config's second eos
    special_tokens=("<|im_start|>", "<|im_end|>"),
    bos_token="<|im_start|>",
    eos_token="<|im_end|>",
    tokenize_apart=True,  # the collater tokenises prompt and answer + '###' separately
)

CHAT_FORMATS = (AFFECTGPT_CHAT,)

#: Released addition order (``tokenizer.add_tokens([...], special_tokens=True)`` five times).
_ADDED = ("<ImageHere>", "<AudioHere>", "<FrameHere>", "<FaceHere>", "<MultiHere>")
AFFECTGPT_PLACEHOLDERS = {
    "frame": "<ImageHere>",
    "audio": "<AudioHere>",
    "video": "<FrameHere>",
    "face": "<FaceHere>",
    "multi": "<MultiHere>",
}
"""emollm modality -> AffectGPT's placeholder token."""

_QWEN25 = next(entry for entry in qwen.BACKBONES if entry["name"] == "qwen2")

#: ``BackboneSpec`` fields of each entry (the registry builds the specs).
BACKBONES = (
    dict(
        name="affectgpt",
        family="qwen2",
        hf_id="Qwen/Qwen2.5-7B-Instruct",
        config_url=_QWEN25["config_url"],
        chat_format="affectgpt",
        default_system=None,
        placeholder_token_policy="reserved",
        reserved_placeholders=AFFECTGPT_PLACEHOLDERS,
        placeholder_note="AffectGPT's <ImageHere> <AudioHere> <FrameHere> <FaceHere> <MultiHere>, added in the "
        "released order; no resize (Qwen2.5's matrix has spare rows)",
        added_tokens=_ADDED,
        bos_token="<|im_start|>",
        pad_token="<|im_end|>",
        default_dtype="float16",
        reference_config=dict(_QWEN25["reference_config"]),
    ),
)
