"""Live speech encoders over raw 16 kHz waveforms: Whisper, HuBERT, wav2vec 2.0, WavLM.

Inputs are ``(B, T_samples)`` float waveforms padded with anything (the padding is masked out) and ``lengths`` in
samples. Every tower does its own preprocessing in torch (Whisper log-mel, wav2vec-style zero-mean/unit-variance),
so raw audio goes straight in. Options shared by all (``encoder_options``):

- ``layer`` (int, -1 = last): which hidden state; 0 is the transformer input (after the conv front end).
- ``layers_mean`` (int, 1): average this many hidden states ending at ``layer`` (AffectGPT: 4, the last four).
- ``pooling``: ``"frame"`` (one token per encoder frame) or ``"utterance"`` (mean over valid frames -> 1 token, as
  Emotion-LLaMA / MERTools' UTT features).
- ``dtype``: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``.

HuBERT / wav2vec 2.0 / WavLM also take AffectGPT's clip layout (``clips``, ``clip_seconds``, ``normalize_scope``):
the waveform is zero-padded to at least one clip, cut into ``clips`` windows of ``clip_seconds`` whose starts are
spread evenly over the clip (pytorchvideo's ``ConstantClipsPerVideoSampler``, exact fractions: clip k starts at
``k * max(D - clip_seconds, 0) / (clips - 1)`` s, overlapping when the clip is short), each window is encoded alone
(no attention mask) and averaged over its encoder frames: one feature per window, ``(B, clips, D)``. With
``normalize_scope="sample"`` the zero-mean/unit-variance normalisation runs over all windows of a sample together,
which is what the release's ``Wav2Vec2FeatureExtractor`` call on an ``(8, 32000)`` tensor does.

A 3-D input ``(B, T, D)`` is this encoder's own output cached on disk and passes through unchanged.

Shape legend: B batch, T samples, F mel frames (3000 per 30 s window), W windows, T' encoder frames, D width.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emollm.encoders._common import (
    POOLINGS,
    LayerSelect,
    ceil_div,
    check_choice,
    check_feature_dim,
    check_model_type,
    pool_time,
    require_folder,
    resolve_dtype,
    valid_mask,
)

SAMPLE_RATE = 16000
WHISPER_N_FFT = 400
WHISPER_HOP = 160
WHISPER_WINDOW_SAMPLES = 30 * SAMPLE_RATE  # 480000 samples -> 3000 mel frames -> 1500 encoder frames
WHISPER_SAMPLES_PER_TOKEN = 2 * WHISPER_HOP  # conv2 has stride 2

__all__ = [
    "SAMPLE_RATE",
    "SpeechSSLEncoder",
    "WhisperAudioEncoder",
    "build_hubert_encoder",
    "build_ssl_encoder",
    "build_wav2vec2_encoder",
    "build_wavlm_encoder",
    "build_whisper_encoder",
    "conv_output_length",
    "resample",
    "whisper_log_mel",
    "whisper_mel_filters",
]


# ---------------------------------------------------------------------------------------------------- Whisper
def whisper_mel_filters(num_mel_bins: int = 80) -> Tensor:
    """Slaney mel filter bank of Whisper's feature extractor, (201, num_mel_bins) float32."""
    from transformers.audio_utils import mel_filter_bank

    filters = mel_filter_bank(
        num_frequency_bins=1 + WHISPER_N_FFT // 2,
        num_mel_filters=num_mel_bins,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(filters).float()


def whisper_log_mel(windows: Tensor, mel_filters: Tensor, window: Tensor | None = None) -> Tensor:
    """Whisper's log-mel spectrogram in torch: (N, 480000) waveforms -> (N, n_mels, 3000) (any multiple of 160).

    The same computation as ``WhisperFeatureExtractor._torch_extract_fbank_features`` (STFT 400/160, power
    spectrum, Slaney mel, log10, clamp to max - 8 per sample, (x + 4) / 4), written here so it runs batched on the
    encoder's device.
    """
    if window is None:
        window = torch.hann_window(WHISPER_N_FFT, device=windows.device)
    stft = torch.stft(windows.float(), WHISPER_N_FFT, WHISPER_HOP, window=window, return_complex=True)  # (N, 201, F+1)
    power = stft[..., :-1].abs() ** 2  # (N, 201, F)
    mel = mel_filters.T @ power  # (n_mels, 201) @ (N, 201, F) -> (N, n_mels, F)
    log_spec = mel.clamp(min=1e-10).log10()
    peak = log_spec.amax(dim=(1, 2), keepdim=True)  # (N, 1, 1)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0


class WhisperAudioEncoder(nn.Module):
    """Whisper's encoder over raw 16 kHz audio of any length (30 s windows, only valid frames are returned).

    Whisper always encodes a 30 s window; a clip of ``n`` samples has ``ceil(n / 160)`` valid mel frames and hence
    ``ceil(n / 320)`` valid encoder frames (conv2 has stride 2) - the same rule as Qwen2-Audio. Longer clips are cut
    into consecutive 30 s windows whose valid frames are concatenated, so ``num_tokens(n) = ceil(n / 320)`` for every
    ``n`` (``1`` with ``pooling="utterance"``).

    Args:
        encoder: A transformers ``WhisperEncoder``.
        feature_dim: Expected output width (checked), or None.
        layer / layers_mean / pooling: See the module docstring.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        feature_dim: int | None = None,
        layer: int = -1,
        layers_mean: int = 1,
        pooling: str = "frame",
    ):
        super().__init__()
        check_choice("pooling", pooling, POOLINGS)
        config = encoder.config
        self.encoder = encoder
        self.select = LayerSelect(config.encoder_layers, layer, layers_mean)
        self.pooling = pooling
        self.output_dim = int(config.d_model)
        check_feature_dim("whisper", feature_dim, self.output_dim)
        # 30 s for every released Whisper (1500 positions); tiny test configs may use shorter windows.
        self.window_samples = int(config.max_source_positions) * WHISPER_SAMPLES_PER_TOKEN
        self.register_buffer("mel_filters", whisper_mel_filters(config.num_mel_bins), persistent=False)
        self.register_buffer("window", torch.hann_window(WHISPER_N_FFT), persistent=False)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike | None = None, dtype: Any = None, **options
    ) -> WhisperAudioEncoder:
        """Load the encoder half of a local transformers Whisper folder (None: the embedded tiny.en)."""
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        from emollm.encoders._convert import embedded_whisper_dir, load_folder_state

        folder = Path(embedded_whisper_dir() if path is None else require_folder("whisper", path, "whisper-large-v3"))
        check_model_type("whisper", folder, ("whisper",))
        config = WhisperConfig.from_pretrained(folder)
        state = load_folder_state(folder, ("model.encoder.", "encoder."))
        with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
            encoder = WhisperEncoder(config)
        missing, unexpected = encoder.load_state_dict(state, strict=False, assign=True)
        if missing or unexpected:
            raise ValueError(
                f"{folder}: Whisper encoder weights do not match (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        if any(t.is_meta for t in (*encoder.parameters(), *encoder.buffers())):
            raise ValueError(f"{folder}: some Whisper encoder tensors were not initialised from the checkpoint")
        encoder.to(resolve_dtype(dtype)).eval()
        return cls(encoder, **options)

    def num_tokens(self, input_length: int) -> int:
        """Encoder frames of a clip of ``input_length`` samples: ``ceil(n / 320)`` (1 with utterance pooling)."""
        if input_length < 1:
            raise ValueError(f"an audio input needs at least one sample, got {input_length}")
        return 1 if self.pooling == "utterance" else ceil_div(input_length, WHISPER_SAMPLES_PER_TOKEN)

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) waveforms, (B,) lengths in samples -> (B, T', D) features, (B,) frame counts."""
        B, T = inputs.shape
        lengths = lengths.to(inputs.device)
        if (lengths < 1).any():
            raise ValueError("every audio input needs at least one sample")
        n_win = max(1, ceil_div(T, self.window_samples))
        audio = inputs.float() * valid_mask(lengths, T)  # the padding becomes Whisper's own zero padding
        audio = F.pad(audio, (0, n_win * self.window_samples - T))  # (B, W * 480000)
        windows = audio.view(B * n_win, self.window_samples)  # (B, W*480000) -> (B*W, 480000)
        starts = torch.arange(n_win, device=inputs.device) * self.window_samples
        used = (starts[None, :] < lengths[:, None]).reshape(-1)  # (B*W,) windows holding any valid sample
        mel = whisper_log_mel(windows[used], self.mel_filters, self.window)  # (N_w, n_mels, 3000)
        dtype = self.encoder.conv1.weight.dtype
        out = self.encoder(mel.to(dtype), output_hidden_states=not self.select.is_last)
        hidden = out.last_hidden_state if self.select.is_last else self.select(out.hidden_states)  # (N_w, 1500, D)
        per_win = hidden.shape[1]
        feats = hidden.new_zeros(B * n_win, per_win, hidden.shape[-1])
        feats = feats.masked_scatter(used[:, None, None], hidden)  # (B*W, 1500, D)
        feats = feats.view(B, n_win * per_win, -1)  # (B*W, 1500, D) -> (B, W*1500, D)
        out_lengths = torch.div(
            lengths + WHISPER_SAMPLES_PER_TOKEN - 1, WHISPER_SAMPLES_PER_TOKEN, rounding_mode="floor"
        )
        feats = feats[:, : int(out_lengths.max())]  # (B, T', D)
        return pool_time(feats, out_lengths, self.pooling)


def build_whisper_encoder(feature_dim: int | None = None, path: str | os.PathLike | None = None, **options):
    """Registry builder for ``whisper`` (``path=None``: the embedded Whisper tiny.en, 384-d)."""
    return WhisperAudioEncoder.from_pretrained(path, feature_dim=feature_dim, **options)


# ---------------------------------------------------------------------------------------------------- HuBERT & co.
def conv_output_length(length: int, kernels: list[int], strides: list[int]) -> int:
    """Frames after a stack of un-padded 1-D convolutions: ``(L - k) // s + 1`` per layer (HF's formula)."""
    for kernel, stride in zip(kernels, strides, strict=True):
        length = (length - kernel) // stride + 1
    return length


_SSL_CLASSES = {"hubert": "HubertModel", "wav2vec2": "Wav2Vec2Model", "wavlm": "WavLMModel"}


class SpeechSSLEncoder(nn.Module):
    """A self-supervised speech model (HuBERT / wav2vec 2.0 / WavLM) over raw 16 kHz audio.

    Output frames follow the conv feature extractor: ``L -> (L - k) // s + 1`` for each (kernel, stride) of
    ``config.conv_kernel`` / ``config.conv_stride`` (20 ms per frame for the standard stack), plus wav2vec 2.0's
    optional adapter. Models whose feature extractor uses group norm (``feat_extract_norm="group"``, the base
    models) normalise over the whole clip, and adapter convolutions see padded frames, so those run each clip alone,
    unpadded; the others run batched with an attention mask. Either way the padding never changes valid outputs.

    Args:
        model: ``HubertModel`` / ``Wav2Vec2Model`` / ``WavLMModel``.
        name: Registry name (for error messages).
        feature_dim: Expected output width (checked), or None.
        normalize: Zero-mean / unit-variance per clip over its valid samples (``Wav2Vec2FeatureExtractor``'s
            ``do_normalize``; chinese-hubert-large uses it).
        layer / layers_mean / pooling: See the module docstring (Emotion-LLaMA: last layer, utterance; AffectGPT:
            ``layers_mean=4``, utterance).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str = "hubert",
        feature_dim: int | None = None,
        normalize: bool = True,
        layer: int = -1,
        layers_mean: int = 1,
        pooling: str = "utterance",
        clips: int = 0,
        clip_seconds: float = 2.0,
        normalize_scope: str = "clip",
    ):
        super().__init__()
        check_choice("pooling", pooling, POOLINGS)
        check_choice("normalize_scope", normalize_scope, ("clip", "sample"))
        if not isinstance(clips, int) or clips < 0:
            raise ValueError(f"encoder_options.clips must be an int >= 0 (0: the whole waveform), got {clips!r}")
        if not clip_seconds > 0:
            raise ValueError(f"encoder_options.clip_seconds must be > 0, got {clip_seconds!r}")
        if normalize_scope == "sample" and not clips:
            raise ValueError("encoder_options.normalize_scope='sample' applies to clips > 0 (AffectGPT's layout)")
        config = model.config
        self.model = model
        self.name = name
        self.normalize = normalize
        self.pooling = pooling
        self.clips = clips
        self.clip_seconds = clip_seconds
        self.normalize_scope = normalize_scope
        self.select = LayerSelect(config.num_hidden_layers, layer, layers_mean)
        self.output_dim = int(config.hidden_size)
        if getattr(config, "add_adapter", False) and getattr(config, "output_hidden_size", None):
            self.output_dim = int(config.output_hidden_size)
        check_feature_dim(name, feature_dim, self.output_dim)
        adapter = bool(getattr(config, "add_adapter", False))
        if adapter and not self.select.is_last:
            raise ValueError("a wav2vec2 model with an adapter only supports the last layer (layer=-1, layers_mean=1)")
        # group norm (base models) normalises over the whole clip and wav2vec2's adapter convs see padded frames:
        # those run one clip at a time, unpadded
        self.batched = config.feat_extract_norm == "layer" and not adapter
        self.min_samples = 1 + sum(
            (k - 1) * math.prod(config.conv_stride[:i]) for i, k in enumerate(config.conv_kernel)
        )

    @classmethod
    def from_pretrained(cls, name: str, path: str | os.PathLike | None, dtype: Any = None, **options):
        """Load ``name``'s model class from a local transformers folder."""
        import json

        import transformers

        folder = require_folder(name, path, "chinese-hubert-large" if name == "hubert" else f"{name}-large")
        check_model_type(name, folder, (name,))
        model_cls = getattr(transformers, _SSL_CLASSES[name])
        model = model_cls.from_pretrained(folder, dtype=resolve_dtype(dtype))
        model.eval()
        if "normalize" not in options:
            pre = folder / "preprocessor_config.json"
            options["normalize"] = json.loads(pre.read_text()).get("do_normalize", True) if pre.is_file() else True
        return cls(model, name=name, **options)

    def _frames(self, length: int) -> int:
        config = self.model.config
        frames = conv_output_length(length, list(config.conv_kernel), list(config.conv_stride))
        if getattr(config, "add_adapter", False):
            k, s = config.adapter_kernel_size, config.adapter_stride
            for _ in range(config.num_adapter_layers):
                frames = (frames + 2 - k) // s + 1  # adapter convs have padding 1
        return frames

    def _check_length(self, length: int) -> None:
        if self.clips:  # padded to a whole clip first
            length = max(length, self.clip_samples)
        if length < self.min_samples or self._frames(length) < 1:
            raise ValueError(
                f"{self.name}: an audio input of {length} samples is shorter than the encoder's receptive field "
                f"({self.min_samples} samples, {1000 * self.min_samples / SAMPLE_RATE:.0f} ms)"
            )

    @property
    def clip_samples(self) -> int:
        return int(Fraction(self.clip_seconds) * SAMPLE_RATE)

    def num_tokens(self, input_length: int) -> int:
        """Encoder frames of a clip of ``input_length`` samples (``clips`` with the clip layout; 1 with utterance
        pooling)."""
        self._check_length(input_length)
        if self.pooling == "utterance":
            return 1
        return self.clips or self._frames(input_length)

    def clip_windows(self, wave: Tensor) -> Tensor:
        """One sample's waveform (T,) -> its ``clips`` windows (clips, clip_samples), as AffectGPT cuts them."""
        if wave.shape[0] < self.clip_samples:  # zero-pad short audio to one clip
            wave = F.pad(wave, (0, self.clip_samples - wave.shape[0]))
        duration = Fraction(wave.shape[0] / SAMPLE_RATE)  # the release's float duration, exactly
        span = Fraction(self.clip_seconds)
        step = Fraction(max(duration - span, 0)) / max(self.clips - 1, 1)
        windows = []
        for k in range(self.clips):
            start = step * k
            a, b = int(start * SAMPLE_RATE), int((start + span) * SAMPLE_RATE)
            windows.append(wave[a:b])
        return torch.stack(windows)  # (clips, clip_samples)

    def _encode_clips(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) waveforms -> (B, clips, D): each window encoded alone, averaged over its frames."""
        dtype = next(self.model.parameters()).dtype
        need_all = not self.select.is_last
        rows = []
        for i, n in enumerate(lengths.tolist()):
            windows = self.clip_windows(inputs[i, : int(n)].float())  # (clips, S)
            if self.normalize and self.normalize_scope == "sample":  # numpy's var: population variance
                windows = (windows - windows.mean()) / torch.sqrt(windows.var(unbiased=False) + 1e-7)
            elif self.normalize:
                mean = windows.mean(dim=1, keepdim=True)
                windows = (windows - mean) / torch.sqrt(windows.var(dim=1, unbiased=False, keepdim=True) + 1e-7)
            out = self.model(windows.to(dtype), output_hidden_states=need_all)
            h = out.last_hidden_state if self.select.is_last else self.select(out.hidden_states)  # (clips, T', D)
            rows.append(h.mean(dim=1))  # (clips, D)
        feats = torch.stack(rows)  # (B, clips, D)
        counts = torch.full_like(lengths, self.clips)
        return pool_time(feats, counts, self.pooling)

    def _normalize(self, audio: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
        n = lengths[:, None].to(audio.dtype)
        mean = (audio * mask).sum(dim=1, keepdim=True) / n  # (B, 1)
        var = (((audio - mean) * mask) ** 2).sum(dim=1, keepdim=True) / n
        return (audio - mean) / torch.sqrt(var + 1e-7) * mask

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) waveforms, (B,) lengths in samples -> (B, T', D) features, (B,) frame counts. A cached (B, T, D)
        output of this encoder passes through."""
        lengths = lengths.to(inputs.device)
        if inputs.dim() == 3:
            if inputs.shape[-1] != self.output_dim:
                raise ValueError(
                    f"{self.name}: cached features must be (B, T, {self.output_dim}) outputs of this encoder, got "
                    f"{tuple(inputs.shape)}"
                )
            return pool_time(inputs, lengths, "frame")
        B, T = inputs.shape
        for n in lengths.tolist():
            self._check_length(int(n))
        if self.clips:
            return self._encode_clips(inputs, lengths)
        dtype = next(self.model.parameters()).dtype
        mask = valid_mask(lengths, T)  # (B, T)
        audio = inputs.float() * mask
        if self.normalize:
            audio = self._normalize(audio, mask, lengths)
        out_lengths = torch.tensor([self._frames(int(n)) for n in lengths.tolist()], device=inputs.device)
        width = int(out_lengths.max())
        need_all = not self.select.is_last
        if self.batched:
            out = self.model(audio.to(dtype), attention_mask=mask.long(), output_hidden_states=need_all)
            feats = out.last_hidden_state if self.select.is_last else self.select(out.hidden_states)
            feats = feats[:, :width]  # (B, T'_max, D)
        else:
            rows = []
            for i, n in enumerate(lengths.tolist()):
                out = self.model(audio[i : i + 1, :n].to(dtype), output_hidden_states=need_all)
                h = out.last_hidden_state if self.select.is_last else self.select(out.hidden_states)  # (1, T'_i, D)
                rows.append(F.pad(h, (0, 0, 0, width - h.shape[1])))
            feats = torch.cat(rows)  # (B, T'_max, D)
        return pool_time(feats, out_lengths, self.pooling)


def build_ssl_encoder(name: str, feature_dim: int | None = None, path: str | os.PathLike | None = None, **options):
    """Registry builder for ``hubert`` / ``wav2vec2`` / ``wavlm`` (needs a local folder)."""
    if name not in _SSL_CLASSES:
        raise ValueError(f"unknown speech encoder {name!r}; known: {', '.join(_SSL_CLASSES)}")
    return SpeechSSLEncoder.from_pretrained(name, path, feature_dim=feature_dim, **options)


def build_hubert_encoder(feature_dim: int | None = None, path: str | os.PathLike | None = None, **options):
    """Registry builder for ``hubert`` (chinese-hubert-large: 1024-d; Emotion-LLaMA uses ``pooling="utterance"``)."""
    return build_ssl_encoder("hubert", feature_dim, path, **options)


def build_wav2vec2_encoder(feature_dim: int | None = None, path: str | os.PathLike | None = None, **options):
    """Registry builder for ``wav2vec2``."""
    return build_ssl_encoder("wav2vec2", feature_dim, path, **options)


def build_wavlm_encoder(feature_dim: int | None = None, path: str | os.PathLike | None = None, **options):
    """Registry builder for ``wavlm``."""
    return build_ssl_encoder("wavlm", feature_dim, path, **options)


# ---------------------------------------------------------------------------------------------------- resampling
def resample(
    waveform: Tensor, orig_sr: int, target_sr: int = SAMPLE_RATE, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> Tensor:
    """Band-limited (Hann-windowed sinc) resampling of (..., T) audio; the algorithm of ``torchaudio.functional``.

    Output length is ``ceil(T * target_sr / orig_sr)``.
    """
    if orig_sr == target_sr:
        return waveform
    gcd = math.gcd(int(orig_sr), int(target_sr))
    orig, new = int(orig_sr) // gcd, int(target_sr) // gcd
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    dtype = waveform.dtype if waveform.is_floating_point() else torch.float32
    idx = torch.arange(-width, width + orig, dtype=torch.float64, device=waveform.device)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64, device=waveform.device)[:, None, None] / new + idx
    t = (t * base).clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones_like(t), t.sin() / t) * window * (base / orig)  # (new, 1, K)
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1]).to(dtype)  # (N, T)
    padded = F.pad(flat, (width, width + orig))
    out = F.conv1d(padded[:, None], kernel.to(dtype), stride=orig)  # (N, new, T / orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)  # (N, T * new / orig)
    target_len = ceil_div(new * shape[-1], orig)
    return out[..., :target_len].reshape(*shape[:-1], target_len)
