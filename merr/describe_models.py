"""Describers backed by a model you point to: ``checkpoint:<dir>`` (an emollm checkpoint with a live encoder) and
``vlm:<path>`` / ``alm:<path>`` (a local transformers multimodal LLM). Nothing is downloaded; torch and transformers
load lazily. Specs and the registry are in :mod:`emollm_merr.describe`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from emollm_merr.clue import ClipContext, Clue, audio_or_unavailable

__all__ = ["CheckpointDescriber", "HFMultimodalDescriber"]


def _file_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


_QUESTIONS = {
    "visual": "Describe objectively what is visible in this frame: the person's surroundings, gestures and posture. "
    "Answer in one sentence, without guessing emotions.",
    "audio": "Describe the speaker's tone of voice (pitch, loudness, pace) in one sentence.",
}


def _peak_frame(clip: ClipContext) -> np.ndarray:
    from emollm.media import read_frames

    info = clip.media_info()
    index = 0 if clip.peak_index is None else min(max(int(clip.peak_index), 0), max(info.frames - 1, 0))
    return read_frames(clip.path, [index], max_side=1280, info=info)  # (1, H, W, 3) uint8


class CheckpointDescriber:
    """Visual or audio clue from an emollm checkpoint (``spec: checkpoint:<dir>``).

    Visual: the peak frame goes to the checkpoint's ``video`` tower (or its ``face`` tower as a face crop) when that
    tower is a live encoder; audio: the waveform goes to its live ``audio`` tower. Checkpoints trained on
    precomputed features cannot look at raw media and are refused with a message saying so.
    """

    cacheable = True
    thread_safe = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        clue: str,
        *,
        max_new_tokens: int = 64,
        device: str = "cpu",
        question: str | None = None,
        face_detector: str = "auto",
    ):
        if clue not in ("visual", "audio"):
            raise ValueError(f"checkpoint describers give 'visual' or 'audio' clues, not {clue!r}")
        from emollm.checkpoints import read_checkpoint_meta
        from emollm.model.configuration import EmoLLMConfig

        self.path = Path(path)
        read_checkpoint_meta(self.path)  # fails early with a clear message when it is not a checkpoint
        towers = {m: c.encoder for m, c in EmoLLMConfig.load(self.path / "emollm_config.json").modalities.items()}
        wanted = ("video", "face") if clue == "visual" else ("audio",)
        modality = next((m for m in wanted if towers.get(m, "precomputed") != "precomputed"), None)
        if modality is None:
            raise ValueError(
                f"checkpoint {self.path} has no live {' or '.join(wanted)} encoder (its towers: {towers}); a "
                f"{clue} clue from raw clips needs one (precomputed-feature towers cannot look at a clip): "
                "use another describer"
            )
        self.clue = clue
        self.modality = modality
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.face_detector = face_detector
        self.question = question or _QUESTIONS[clue]
        q = hashlib.sha256(self.question.encode()).hexdigest()[:8]
        digest = _file_digest(
            self.path / "checkpoint.json", self.path / "projectors.safetensors", self.path / "adapter_model.safetensors"
        )
        self.id = f"checkpoint:{self.path.resolve()}:{digest}:{clue}:{modality}:{q}:{max_new_tokens}"
        self._loaded: tuple[Any, Any] | None = None

    def _model(self):
        if self._loaded is None:
            from emollm.checkpoints import load_model

            self._loaded = load_model(self.path, device=self.device)
        return self._loaded

    def _inputs(self, clip: ClipContext, modality: str):
        import torch

        if modality == "audio":
            wave, missing = audio_or_unavailable(self.id, clip)
            return (None, missing) if missing is not None else (torch.from_numpy(np.ascontiguousarray(wave)), None)
        if modality == "video":
            return torch.from_numpy(_peak_frame(clip)), None
        from emollm.media import load_sample

        info = clip.media_info()
        scores = np.zeros(max(info.frames, 1))
        scores[min(clip.peak_index or 0, len(scores) - 1)] = 1.0
        sample = load_sample(
            clip.path,
            modalities=("face",),
            face_policy="peak",
            frame_policy="peak",
            scores=scores,
            face_detector=self.face_detector,
        )
        if sample.faces is None:
            return None, Clue.unavailable(self.id, f"no face at the peak frame ({sample.missing.get('face', '')})")
        return torch.from_numpy(sample.faces), None

    def describe(self, clip: ClipContext) -> Clue:
        from emollm.model.generation import chat
        from emollm.model.processing import MARKERS, Sample

        model, processor = self._model()
        modality = self.modality
        features, missing = self._inputs(clip, modality)
        if missing is not None:
            return missing
        sample = Sample(
            messages=[{"role": "user", "content": f"{MARKERS[modality]} {self.question}"}],
            features={modality: features},
            name=clip.name,
        )
        answer = chat(model, processor, [sample], max_new_tokens=self.max_new_tokens, do_sample=False)[0]
        return Clue.available(answer, self.id)


class HFMultimodalDescriber:
    """Visual (``vlm:<path>``) or audio (``alm:<path>``) clue from a local transformers multimodal LLM.

    Loads ``AutoProcessor`` + ``AutoModelForMultimodalLM`` (else ``AutoModelForImageTextToText``) from the folder,
    never from the network, and asks :data:`_QUESTIONS` with the peak frame (as a PIL image) or the 16 kHz wave
    through the processor's chat template. Greedy decoding. This is the slot for the MiniGPT-v2 / Qwen-Audio
    describers of the MERR paper; tested here only through its error paths (no such weights ship offline).
    """

    cacheable = True
    thread_safe = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        clue: str,
        *,
        max_new_tokens: int = 64,
        device: str = "cpu",
        question: str | None = None,
    ):
        if clue not in ("visual", "audio"):
            raise ValueError(f"vlm/alm describers give 'visual' or 'audio' clues, not {clue!r}")
        self.path = Path(path).expanduser()
        if not (self.path / "config.json").is_file():
            kind = "vlm" if clue == "visual" else "alm"
            raise FileNotFoundError(
                f"{kind}:{self.path}: expected a local transformers model folder with config.json "
                "(weights are never downloaded)"
            )
        self.clue = clue
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.question = question or _QUESTIONS[clue]
        q = hashlib.sha256(self.question.encode()).hexdigest()[:8]
        kind = "vlm" if clue == "visual" else "alm"
        digest = _file_digest(self.path / "config.json")
        self.id = f"{kind}:{self.path.resolve()}:{digest}:{q}:{max_new_tokens}"
        self._loaded: tuple[Any, Any] | None = None

    def _model(self):
        if self._loaded is None:
            import transformers

            processor = transformers.AutoProcessor.from_pretrained(self.path)
            errors = []
            for name in ("AutoModelForMultimodalLM", "AutoModelForImageTextToText"):
                auto = getattr(transformers, name, None)
                if auto is None:
                    continue
                try:
                    model = auto.from_pretrained(self.path).to(self.device).eval()
                    break
                except (ValueError, KeyError) as e:
                    errors.append(f"{name}: {e}")
            else:
                raise ValueError(f"{self.path}: not a multimodal LLM transformers can load ({'; '.join(errors)})")
            self._loaded = (processor, model)
        return self._loaded

    def describe(self, clip: ClipContext) -> Clue:
        import torch

        processor, model = self._model()
        if self.clue == "visual":
            from PIL import Image

            part: dict[str, Any] = {"type": "image", "image": Image.fromarray(_peak_frame(clip)[0])}
        else:
            wave, missing = audio_or_unavailable(self.id, clip)
            if missing is not None:
                return missing
            part = {"type": "audio", "audio": wave}
        messages = [{"role": "user", "content": [part, {"type": "text", "text": self.question}]}]
        inputs = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        inputs = inputs.to(self.device)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1] :]
        text = processor.batch_decode(new, skip_special_tokens=True)[0]
        return Clue.available(text, self.id)
