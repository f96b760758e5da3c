"""A synthetic feature dataset: class-dependent random features + templated answers.

It exercises the whole stack (placeholder expansion, projection, splicing, LoRA training, checkpointing, generation)
with a task that can only be solved by reading the spliced features: the text never names the emotion, each class
has its own random prototype per modality, and every sample is its prototype plus noise. It says nothing about real
emotion recognition; it proves the plumbing learns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from emollm.labels import MER2023_LABELS
from emollm.model.processing import Sample
from emollm.model.prompts import EVAL_PROMPTS

PROMPT = EVAL_PROMPTS["emotion"]
SUBTITLES = ("I see", "Let me think about it", "That is what he told me", "We will talk tomorrow", "Okay")


class SyntheticEmotionData:
    """Deterministic generator of labelled ``Sample`` objects.

    Args:
        feature_dims: modality -> feature width (one frame per sample, like utterance-level features).
        labels: Class names.
        noise: Standard deviation of the per-sample noise around each class prototype (prototypes have unit scale).
        seed: Seed of the prototypes; samples take their own seed.
    """

    def __init__(
        self,
        feature_dims: dict[str, int],
        labels: Sequence[str] = MER2023_LABELS,
        noise: float = 0.5,
        seed: int = 0,
    ):
        self.labels = tuple(labels)
        self.noise = noise
        self.feature_dims = dict(feature_dims)
        g = torch.Generator().manual_seed(seed)
        self.prototypes = {m: torch.randn(len(self.labels), d, generator=g) for m, d in self.feature_dims.items()}

    def sample(self, index: int, *, split_seed: int = 1, with_answer: bool = True) -> tuple[Sample, str]:
        """Sample number ``index`` of a split (different ``split_seed`` values give disjoint-looking splits)."""
        g = torch.Generator().manual_seed(split_seed * 1_000_003 + index)
        label_idx = int(torch.randint(len(self.labels), (1,), generator=g))
        feats = {
            m: (p[label_idx] + self.noise * torch.randn(p.shape[1], generator=g))[None, :]  # (1, D)
            for m, p in self.prototypes.items()
        }
        subtitle = SUBTITLES[int(torch.randint(len(SUBTITLES), (1,), generator=g))]
        messages = [{"role": "user", "content": PROMPT.format(subtitle=subtitle, labels=", ".join(self.labels))}]
        label = self.labels[label_idx]
        if with_answer:
            messages.append({"role": "assistant", "content": f"The emotion is {label}."})
        return Sample(messages=messages, features=feats, name=f"synthetic-{split_seed}-{index}"), label

    def split(self, n: int, *, split_seed: int, with_answer: bool = True) -> tuple[list[Sample], list[str]]:
        pairs = [self.sample(i, split_seed=split_seed, with_answer=with_answer) for i in range(n)]
        return [p[0] for p in pairs], [p[1] for p in pairs]
