"""Clue mode: a raw clip (or audio, face image, text) in, a label distribution with its evidence and a reasoning out,
from real models that ship offline and no trained checkpoint.

The stages, each timed:

1. **media**: the main-face track's crops (``uniform:N`` frames), the 16 kHz audio, or the text of a ``.txt`` file
   (:func:`emollm.media.load_sample`); what is absent is reported in ``missing`` with the reason.
2. **face**: the FER2013 mini-Xception's probabilities per crop (``face_expression`` voter: their mean), facial
   action units from MediaPipe blendshapes per crop (:mod:`emollm.clues.blendshapes`), MERR's peak rule over them
   and MERR's AU-combination table at the peak (``face_aus`` voter).
3. **speech**: the embedded Whisper tiny.en transcript (unless Whisper's own no-speech probability says there is
   none) and Praat prosody (:mod:`emollm.clues.prosody`).
4. **text**: an emotion distribution of the transcript or text file (``text`` voter, :mod:`emollm.clues.text_emotion`).
5. **fusion**: the weighted mean of the voters present (:mod:`emollm.clues.fusion`, weights in ``fusion.yaml``).
6. **reasoning**: the embedded LLM writes a MERR-style rationale from the clue description; a rationale that names
   another label (or several), loops or is empty is replaced by a plain template rationale
   (``reasoning_source`` says which one you got).

Bounded work: a subtitle, transcript or text file longer than ``max_text_chars`` is cut before any model reads it
(``notes`` says so), and under a :func:`emollm.utils.deadline.deadline` (the service's ``--timeout-s``) every stage
checks the deadline and the rationale's generation stops at it (:class:`~emollm.utils.deadline.DeadlineExceeded`).

Example:
    >>> analyzer = ClueAnalyzer(labels=["happy", "sad", "neutral", "angry"])   # doctest: +SKIP
    >>> result = analyzer("clip.mp4")                                            # doctest: +SKIP
    >>> result.label, result.reasoning_source                                    # doctest: +SKIP
    ('happy', 'llm:smollm2')
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emollm.apps.analysis import MAX_TEXT_CHARS, Analysis, bound_text
from emollm.clues.fusion import FusionConfig, Vote, fuse, load_fusion_config, map_distribution
from emollm.labels import FER2013_LABELS, MER2023_LABELS
from emollm.utils.deadline import check_deadline

__all__ = ["ClueAnalyzer", "ClueSettings", "template_reasoning"]

_SPEECH_MIN_SECONDS = 0.3


@dataclass
class ClueSettings:
    """What clue mode runs with; every field is recorded in the output's ``produced_by``.

    Attributes:
        frames: Frames sampled uniformly for the face branch.
        face_detector: ``auto`` (MTCNN, else Haar), ``mtcnn`` or ``haar``.
        asr: Transcribe speech with the embedded Whisper.
        no_speech_threshold: Whisper's no-speech probability above which the transcript is dropped.
        text_model: ``minilm`` (zero-shot, default) or ``nade``.
        reasoning: ``llm`` (the embedded LLM, checked) or ``template``.
        reasoning_backbone: Registry backbone that writes the rationale (``smollm2`` is embedded).
        llm_path: Local weights for a backbone without embedded weights.
        max_new_tokens: Rationale length budget.
        precision: ``auto`` (bf16 autocast where the CPU has native bf16), ``fp32`` or ``bf16``.
        engine: In-process engine of the rationale: ``auto`` (llama.cpp on a CPU when installed and the weights
            are a GGUF), ``transformers`` or ``llama.cpp`` (:func:`emollm.engines.build_engine`).
        llm_endpoint: An OpenAI-compatible server that writes the rationale instead (``llm_model`` names the
            model); a server failure is an error of the clip, never a template in disguise.
        llm_model: The served model's name.
        llm_api_key_env: Environment variable with the server's API key.
        llm_timeout: Seconds per request attempt to the server.
        llm_extra: Extra request fields for the server (e.g. llama.cpp's ``{"repeat_penalty": 1.0}``).
        fusion_config: A fusion YAML (None: the packaged ``fusion.yaml``).
        max_text_chars: Longest subtitle, transcript or text file given to the text model and the rationale's
            prompt; longer ones are cut (the result's ``notes`` says so).
    """

    frames: int = 12
    face_detector: str = "auto"
    asr: bool = True
    no_speech_threshold: float = 0.6
    text_model: str = "minilm"
    reasoning: str = "llm"
    reasoning_backbone: str = "smollm2"
    llm_path: str | None = None
    max_new_tokens: int = 96
    precision: str = "auto"
    fusion_config: str | None = None
    engine: str = "auto"
    llm_endpoint: str | None = None
    llm_model: str | None = None
    llm_api_key_env: str = "EMOLLM_LLM_API_KEY"
    llm_timeout: float = 120.0
    llm_extra: dict[str, Any] | None = None
    max_text_chars: int = MAX_TEXT_CHARS

    def __post_init__(self) -> None:
        if isinstance(self.max_text_chars, bool) or not isinstance(self.max_text_chars, int) or self.max_text_chars < 1:
            raise ValueError(f"max_text_chars: must be a positive whole number, got {self.max_text_chars!r}")
        if self.frames < 1:
            raise ValueError(f"frames: must be >= 1, got {self.frames}")
        if self.text_model not in ("minilm", "nade"):
            raise ValueError(f"text_model: must be 'minilm' or 'nade', got {self.text_model!r}")
        if self.reasoning not in ("llm", "template"):
            raise ValueError(f"reasoning: must be 'llm' or 'template', got {self.reasoning!r}")
        if not 0.0 <= self.no_speech_threshold <= 1.0:
            raise ValueError(f"no_speech_threshold: must be in [0, 1], got {self.no_speech_threshold}")


def template_reasoning(label: str | None, clues: dict[str, str | None]) -> str:
    """A plain rationale that states the evidence and the fused label, without invention.

    Example:
        >>> template_reasoning("happy", {"visual_expression": "lip corner puller (smile)", "subtitle": "I passed"})
        'The facial expression shows lip corner puller (smile). The person says: "I passed". Taken together, the clues point to happy.'
    """  # noqa: E501
    parts = []
    if clues.get("visual_expression"):
        parts.append(f"The facial expression shows {clues['visual_expression']}.")
    if clues.get("audio"):
        parts.append(f"The voice is {clues['audio']}.")
    if clues.get("subtitle"):
        parts.append(f'The person says: "{clues["subtitle"]}".')
    if label is None:
        parts.append("There is not enough evidence to name an emotion.")
    else:
        parts.append(f"Taken together, the clues point to {label}.")
    return " ".join(parts)


@dataclass
class _Timer:
    timings: dict[str, float] = field(default_factory=dict)

    def __call__(self, name: str, start: float) -> None:
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 4)


class ClueAnalyzer:
    """Zero-shot clue mode over one clip at a time; models load on first use and stay loaded (batch, service).

    Args:
        labels: The label set, in prompt order (default: MER2023's six).
        settings: :class:`ClueSettings`.
    """

    def __init__(self, labels: Sequence[str] = MER2023_LABELS, settings: ClueSettings | None = None) -> None:
        from emollm.labels import LabelParser

        self.labels = tuple(labels)
        if len(self.labels) < 2:
            raise ValueError(f"labels: need at least two labels, got {list(self.labels)}")
        self.parser = LabelParser(self.labels)  # also rejects duplicate labels
        self.settings = settings or ClueSettings()
        self.fusion: FusionConfig = load_fusion_config(self.settings.fusion_config)
        self._models: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------------ models
    def _model(self, name: str) -> Any:
        if name not in self._models:
            s = self.settings
            if name == "landmarker":
                from emollm.clues.blendshapes import BlendshapeAUs

                self._models[name] = BlendshapeAUs()
            elif name == "whisper":
                from emollm.encoders.text import WhisperTranscriber

                self._models[name] = WhisperTranscriber()
            elif name == "text":
                from emollm.clues.text_emotion import MiniLMZeroShot, NadePlutchik

                cls = MiniLMZeroShot if s.text_model == "minilm" else NadePlutchik
                self._models[name] = cls(labels=self.labels)
            elif name == "cues":
                from emollm.aus.cues import load_cue_table

                self._models[name] = load_cue_table()
            elif name == "llm":
                from emollm.engines import build_engine

                self._models[name] = build_engine(
                    s.reasoning_backbone, s.llm_path, engine=s.engine, endpoint=s.llm_endpoint, model=s.llm_model,
                    api_key_env=s.llm_api_key_env, max_new_tokens=s.max_new_tokens, precision=s.precision,
                    concurrency=1, timeout=s.llm_timeout, extra_body=s.llm_extra,
                )  # fmt: skip
        return self._models[name]

    def close(self) -> None:
        """Release the MediaPipe landmarker (the other models are plain torch modules)."""
        landmarker = self._models.pop("landmarker", None)
        if landmarker is not None:
            landmarker.close()

    def __enter__(self) -> ClueAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ stages
    def face_frames(self, faces: np.ndarray, timer: _Timer) -> tuple[np.ndarray, list[Any]]:
        """The per-frame work of the face branch, done once per crop: FER2013 probabilities ``(M, 7)`` and the
        blendshape AUs of each crop (a timeline's windows and a stream's hops aggregate these)."""
        from emollm.encoders.face import classify_faces

        t = time.perf_counter()
        probs = classify_faces(faces).numpy()  # (M, S, S, 3) -> (M, 7) in FER2013 order
        timer("face_expression", t)
        t = time.perf_counter()
        per_frame = self._model("landmarker").from_images(list(faces))
        timer("face_aus", t)
        return probs, per_frame

    def _face(
        self, media: Any, timer: _Timer, frames: tuple[np.ndarray, list[Any]] | None = None
    ) -> tuple[list[Vote], dict[str, Any], str | None]:
        """Votes and evidence of the face branch, and the clue phrase for the prompt (``frames``: the
        :meth:`face_frames` of ``media``'s crops, already computed)."""
        from emollm.aus.cues import describe_aus, label_from_peak
        from emollm.aus.openface import AUSequence, NoFaceError
        from emollm.aus.peaks import select_peak
        from emollm.clues.blendshapes import au_arrays

        votes: list[Vote] = []
        probs, per_frame = frames if frames is not None else self.face_frames(media.faces, timer)
        mean = probs.mean(axis=0)
        scores = {lab: round(float(p), 4) for lab, p in zip(FER2013_LABELS, mean, strict=True)}
        dist, unmapped = map_distribution(scores, self.labels, self.fusion.aliases)
        evidence: dict[str, Any] = {
            "frames": [int(i) for i in media.face_indices],
            "expression_scores": scores,
            "expression_over_time": [
                {lab: round(float(p), 4) for lab, p in zip(FER2013_LABELS, row, strict=True)}  # one row per frame
                for row in probs
            ],
        }
        if dist is not None:
            top = max(scores, key=scores.get)
            votes.append(Vote("face_expression", dist, f"FER2013 CNN mean over {len(probs)} frames: {top}", unmapped))

        arrays = au_arrays(per_frame, fps=media.info.fps or None)
        phrase = None
        if not arrays.valid.any():
            evidence["aus"] = None
            evidence["aus_missing"] = "the landmarker found no face in the crops"
        else:
            seq = AUSequence(**arrays.to_au_sequence_kwargs())
            try:
                peak = select_peak(seq, "paper")
            except NoFaceError as e:
                evidence["aus_missing"] = str(e)
                return votes, evidence, None
            table = self._model("cues")
            cue = label_from_peak(seq, peak, table)
            at_peak = {a: round(float(seq.intensity[a][peak.index]), 3) for a in seq.intensity}
            active = {a: at_peak[a] for a in peak.active_aus if a in at_peak}
            names = dict(zip(active, describe_aus(list(active), table), strict=True))
            row = peak.index
            box = media.face_track.boxes[row] if media.face_track is not None else None
            evidence.update(
                au_source="blendshapes",
                aus={a: {"intensity": v, "name": names.get(a, a)} for a, v in active.items()},
                peak_frame=int(media.face_indices[row]),
                peak_AU_list=list(cue.peak_AU_list),
                au_label=cue.pseu_emotion,
                au_strength=cue.strength,
                au_candidates=[c.to_dict() for c in cue.candidates],
                face_box=None
                if box is None
                else [round(box.x0, 1), round(box.y0, 1), round(box.x1, 1), round(box.y1, 1)],
            )
            phrase = ", ".join(names[a] for a in active) or None
            # The table's verdict restricted to the label set: the strongest firing combination that maps onto a
            # requested label (the table's own winner is reported as au_label either way).
            for cand in cue.candidates:
                target, _ = map_distribution({cand.emotion: 1.0}, self.labels, self.fusion.aliases)
                if target is None:
                    continue
                hit = max(target, key=target.get)
                conf = self.fusion.au_confidence.get(cand.strength or "slight", 0.55)
                rest = (1.0 - conf) / (len(self.labels) - 1)
                d = {lab: (conf if lab == hit else rest) for lab in self.labels}
                votes.append(Vote("face_aus", d, f"AU table at the peak: {cand.emotion} ({cand.strength})"))
                break
            else:
                if cue.candidates:
                    fired = ", ".join(c.emotion for c in cue.candidates)
                    evidence["au_label_unmapped"] = f"the AU table fired {fired}, none of which is in the label set"
        return votes, evidence, phrase

    def _speech(
        self, media: Any, timer: _Timer, keep: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], str | None, str | None]:
        """Evidence of the audio branch, the prosody phrase and the transcript (``keep``: receives the Praat track
        and the word times, for a timeline)."""
        from emollm.clues.prosody import describe_prosody, prosody_track

        wave = np.asarray(media.audio, dtype=np.float32)
        t = time.perf_counter()
        track = prosody_track(wave, media.sample_rate)  # Praat once; windows of a timeline reuse it
        prosody = track.window(0.0, track.duration_s)
        timer("prosody", t)
        evidence: dict[str, Any] = {"prosody": prosody.to_dict()}
        phrase = describe_prosody(prosody) if prosody.has_speech else None
        evidence["tone"] = phrase
        transcript = None
        if self.settings.asr and prosody.has_speech and len(wave) / media.sample_rate >= _SPEECH_MIN_SECONDS:
            t = time.perf_counter()
            heard = self._model("whisper").transcribe(  # one encoder pass: no-speech probability, text, word times
                wave, media.sample_rate, words=keep is not None, no_speech_threshold=self.settings.no_speech_threshold
            )
            evidence["no_speech_prob"] = None if heard.no_speech_prob is None else round(heard.no_speech_prob, 4)
            transcript = heard.text
            timer("asr", t)
            if keep is not None:
                keep["words"] = heard.words
        if keep is not None:
            keep["prosody"] = track
            if "words" not in keep:
                keep["no_words"] = "no speech recognised" if self.settings.asr else "transcription is off"
        evidence["transcript"] = transcript
        return evidence, phrase, transcript

    def _text(self, text: str, timer: _Timer) -> tuple[Vote | None, dict[str, Any]]:
        t = time.perf_counter()
        result = self._model("text")(text)
        timer("text", t)
        evidence = result.to_dict()
        if not result.distribution:
            return None, evidence
        dist, unmapped = map_distribution(result.distribution, self.labels, self.fusion.aliases)
        if dist is None:
            return None, evidence
        return Vote("text", dist, f"{result.model_id}: {result.label}", unmapped), evidence

    def _reason(self, label: str | None, clues: dict[str, str | None], timer: _Timer) -> tuple[str, str]:
        from emollm.apps.reasoning import check_quality, check_reasoning
        from emollm.model.prompts import build_reasoning_prompt

        if label is None:
            return template_reasoning(None, clues), "template (no label)"
        if self.settings.reasoning == "template":
            return template_reasoning(label, clues), "template (asked)"
        check_deadline("reasoning")
        t = time.perf_counter()
        llm = self._model("llm")
        system, user = build_reasoning_prompt(clues, label)
        text = llm.generate(system, user, seed=0).strip()  # stops at the deadline, then raises DeadlineExceeded
        timer("reasoning", t)
        problem = check_quality(text) if text else "empty"
        if problem is None:
            verdict = check_reasoning(text, label, self.labels, self.parser)
            others = [lab for lab in verdict.mentioned if lab != label]
            if others:
                problem = f"names {', '.join(others)}"
            elif verdict.status != "consistent":
                problem = verdict.issue
        if problem is not None:
            return template_reasoning(label, clues), f"template (the LLM's rationale was rejected: {problem})"
        s = self.settings
        return text, f"llm:{s.llm_model if s.llm_endpoint else s.reasoning_backbone}"

    # ------------------------------------------------------------------------------------------------ run
    def load_kwargs(self, timeline: Any = None) -> dict[str, Any]:
        """The :func:`emollm.media.load_sample` arguments of this analyzer (for decoding in another process); with a
        :class:`~emollm.apps.timeline.TimelineSettings`, face frames at its rate."""
        s = self.settings
        return {
            "modalities": ("audio", "face", "text"),
            "frame_policy": timeline.frame_policy() if timeline is not None else f"uniform:{s.frames}",
            "face_detector": s.face_detector,
            "min_audio_duration": None,
        }

    def __call__(
        self, path: str | Path, *, subtitle: str | None = None, media: Any = None, timeline: Any = None
    ) -> Analysis:
        """Analyse one file (video, audio, image or ``.txt``).

        Args:
            path: The media file.
            subtitle: A known transcript (skips ASR).
            media: The file already decoded (a :class:`~emollm.media.MediaSample` of :meth:`load_kwargs`), e.g. by
                an isolated worker process (:func:`emollm.jobs.batch.run_batch`).
            timeline: A :class:`~emollm.apps.timeline.TimelineSettings`: also give one entry per window
                (``result.timeline``), from the same per-frame and per-second work as the whole-clip answer.

        Raises:
            emollm.media.MediaError: The file cannot be used (missing, empty, corrupt, unsupported), naming it.
            ValueError: A timeline of an image or a text file.
        """
        from emollm.media import load_sample

        timer = _Timer()
        start = time.perf_counter()
        s = self.settings
        notes: list[str] = []
        subtitle, note = bound_text(subtitle, s.max_text_chars, "subtitle")
        notes += [note] if note else []
        check_deadline("media")
        if media is None:
            media = load_sample(path, subtitle=subtitle, **self.load_kwargs(timeline))
        elif subtitle is not None:
            media.text = subtitle
        if media.info.kind == "text":  # the file's text (load_sample reads it whatever the subtitle)
            media.text, note = bound_text(media.text, s.max_text_chars, "text file")
            notes += [note] if note else []
        timer("media", start)
        if timeline is not None and media.info.kind in ("image", "text"):
            raise ValueError(f"{Path(path).name}: a timeline needs a video or an audio file, not {media.info.kind!r}")
        measured: dict[str, Any] | None = None if timeline is None else {}  # per-frame/per-second work, kept
        missing = {m: r for m, r in media.missing.items() if m != "text" or media.info.kind == "text"}
        votes: list[Vote] = []
        evidence: dict[str, Any] = {}
        clues: dict[str, str | None] = {"visual_expression": None, "visual": None, "audio": None, "subtitle": None}
        if media.faces is not None:
            check_deadline("face")
            if measured is not None:
                measured["face"] = self.face_frames(media.faces, timer)
            face_votes, evidence["face"], clues["visual_expression"] = self._face(
                media, timer, frames=None if measured is None else measured["face"]
            )
            votes += face_votes
            if evidence["face"].get("aus_missing"):
                missing["face_aus"] = evidence["face"]["aus_missing"]
        transcript = subtitle
        if media.audio is not None:
            check_deadline("speech")
            evidence["audio"], clues["audio"], asr_text = self._speech(media, timer, keep=measured)
            asr_text, note = bound_text(asr_text, s.max_text_chars, "transcript")
            notes += [note] if note else []
            transcript = transcript or asr_text
            if asr_text is None and subtitle is None:
                missing["transcript"] = (
                    "no speech recognised" if s.asr else "transcription is off (--no-asr) and no subtitle was given"
                )
        if media.info.kind == "text":
            transcript = media.text
        if transcript:
            clues["subtitle"] = transcript
            check_deadline("text")
            vote, evidence["text"] = self._text(transcript, timer)
            evidence["text"]["transcript"] = transcript
            if vote is not None:
                votes.append(vote)
        fused = fuse(votes, self.labels, self.fusion)
        if fused.label is None:
            missing.setdefault("label", "no modality gave evidence (no face, no speech, no text)")
        evidence["fusion"] = {
            "weights": {k: round(v, 4) for k, v in fused.weights.items()},
            "votes": {v.source: {"distribution": {k: round(p, 4) for k, p in v.distribution.items()},
                                 "note": v.note, "unmapped": round(v.unmapped, 4)} for v in votes},
        }  # fmt: skip
        reasoning, source = self._reason(fused.label, clues, timer)
        windows = None
        if timeline is not None:
            from emollm.apps.timeline import clue_timeline

            windows = clue_timeline(self, media, measured or {}, timeline, timer=timer, subtitle=subtitle)
        timer.timings["total"] = round(time.perf_counter() - start, 4)
        used = [m for m, key in (("face", "face"), ("audio", "audio"), ("text", "text")) if key in evidence]
        return Analysis(
            file=str(path),
            mode="clues",
            label=fused.label,
            probabilities=fused.probabilities,
            reasoning=reasoning,
            reasoning_source=source,
            modalities=used,
            missing=missing,
            evidence=evidence,
            timings=timer.timings,
            produced_by=self.produced_by(),
            subtitle=transcript,
            notes=notes,
            timeline=windows,
        )

    def produced_by(self) -> dict[str, Any]:
        """How outputs of this analyzer are produced: mode, models, precision, fusion weights."""
        from emollm.model.precision import resolve_precision

        s = self.settings
        llm = self._models.get("llm")
        return {
            "mode": "clues",
            "labels": list(self.labels),
            "models": {
                "face_detector": s.face_detector,
                "face_expression": "fer2013-mini-xception (fer 25.10.3)",
                "face_aus": "mediapipe face_landmarker blendshapes -> FACS AUs (emollm.clues.blendshapes)",
                "au_table": "MERR AU-combination table (emollm/aus/au_cues.yaml)",
                "asr": "whisper-tiny.en (embedded)" if s.asr else None,
                "prosody": "praat (parselmouth 0.4.7)",
                "text": getattr(self._models.get("text"), "model_id", s.text_model),
                "reasoning": None
                if s.reasoning == "template"
                else (
                    f"{s.llm_model} ({s.llm_endpoint})"
                    if s.llm_endpoint
                    else f"{s.reasoning_backbone} ({s.llm_path or 'embedded'})"
                ),
            },
            # engine, model as served, sampling, and why that engine (once the LLM has run)
            "reasoning_engine": llm.produced_by() if llm is not None else None,
            "precision": getattr(llm, "precision", None) or resolve_precision(s.precision),  # of the LLM
            "linear_kernels": getattr(llm, "linear_kernels", None),  # of the LLM, once loaded
            "encoders_precision": "fp32",  # FER, MediaPipe, Whisper, MiniLM
            "fusion": self.fusion.weights,
            "max_text_chars": s.max_text_chars,
        }
