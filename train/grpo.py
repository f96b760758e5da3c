"""``train.stage: grpo``: group-relative policy optimisation (DeepSeekMath / R1) inside the one training recipe.

Each optimizer step, on every process: take ``batch_size x grad_accum`` prompts of the run's data (the conversation
without its answer), sample ``G = grpo.group_size`` completions per prompt from the current policy (LoRA on; the
sampling RNG is seeded by seed, step, process and micro-batch, so a resumed run samples the same completions), score
them with the weighted reward functions of :mod:`emollm.scoring.rewards`, normalise the rewards within each group
(``(r - mean) / (std + eps)``) and minimise, per completion token,

    -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) + beta * KL,   ratio = pi / pi_old

averaged over each completion's tokens, then over completions (the GRPO paper's normalisation). ``pi_old`` is the
policy at sampling time (with ``grpo.iterations = 1`` its detached log-probs, as in TRL). The KL is the k3 estimator
``exp(ref - logp) - (ref - logp) - 1`` against the **reference: the same model with its LoRA adapter disabled**
(peft's ``disable_adapter()``), so there is no second copy of the LLM.

Why not TRL's ``GRPOTrainer`` (``trl`` installs beside our transformers/peft): it generates from ``input_ids`` of a
plain HF causal LM (or a vLLM server) and computes log-probs from ``input_ids``; our model splices projected modality
features into ``inputs_embeds`` (``EmoLLMForCausalLM.embed``) and carries ``modality_inputs`` beside the ids, so both
its generation and its log-prob pass would need overriding: what is left of the trainer is this loop. Writing it in
our recipe also keeps our checkpoints, exact resume (``train/state.py``), DDP and logging.

Everything else is the SFT recipe's (``train/sft.py``): model and LoRA set-up, optimizer, schedule, resumable
checkpoints, validation, ``final``/``best``. ``train_log.jsonl`` gets, per step, ``reward`` (the weighted total), one
key per reward function (its unweighted mean), ``kl``, ``completion_length`` (tokens), ``reward_std``,
``clip_fraction`` and ``loss``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from emollm.model.lora import keep_4bit_trainable

__all__ = [
    "GRPOBatch",
    "completion_mask",
    "group_advantages",
    "grpo_loss",
    "sample_group",
    "train_grpo",
]


def _items(items: Sequence[Any]) -> list[Any]:
    """DataLoader collate function keeping the ``TrainItem`` objects (prompts are built per step)."""
    return list(items)


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float) -> torch.Tensor:
    """``(r - mean) / (std + eps)`` within each group of ``group_size`` consecutive rewards.

    Args:
        rewards: (B * G,) rewards, the G completions of a prompt consecutive.
        group_size: G.
        eps: Added to the (unbiased) standard deviation.

    Returns:
        (B * G,) advantages.
    """
    r = rewards.view(-1, group_size)  # (B*G,) -> (B, G)
    return ((r - r.mean(dim=1, keepdim=True)) / (r.std(dim=1, keepdim=True) + eps)).reshape(-1)


def completion_mask(tokens: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    """(B, N) mask of each completion's tokens up to and including its first stop token.

    Args:
        tokens: (B, N) sampled ids (padded after a row stops).
        stop_ids: Ids that end an answer.
    """
    is_stop = torch.isin(tokens, torch.tensor(list(stop_ids), device=tokens.device))  # (B, N)
    n = tokens.shape[1]
    first = torch.where(
        is_stop.any(dim=1), is_stop.int().argmax(dim=1), torch.full_like(is_stop[:, 0], n, dtype=torch.long)
    )
    return torch.arange(n, device=tokens.device)[None, :] <= first[:, None]  # (B, N)


@dataclass
class GRPOBatch:
    """One micro-batch of sampled completions, ready for the loss.

    Attributes:
        input_ids: (B*G, P+N) left-padded prompt + completion ids.
        attention_mask: (B*G, P+N).
        modality_inputs: The prompts' modality batches (each prompt repeated G times).
        mask: (B*G, N) completion-token mask.
        advantages: (B*G,).
        old_logp: (B*G, N) log-probs at sampling time (None: the detached current ones, ``iterations == 1``).
        ref_logp: (B*G, N) reference log-probs (None when ``beta == 0``).
        rewards: (B*G,) weighted rewards.
        parts: Reward name -> (B*G,) unweighted values.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    modality_inputs: dict[str, Any]
    mask: torch.Tensor
    advantages: torch.Tensor
    old_logp: torch.Tensor | None
    ref_logp: torch.Tensor | None
    rewards: torch.Tensor
    parts: dict[str, torch.Tensor]


def completion_logp(model: torch.nn.Module, batch: GRPOBatch) -> torch.Tensor:
    """(B*G, N) log-probabilities of the completion tokens under ``model`` (position ids follow the left padding,
    as in generation)."""
    n = batch.mask.shape[1]
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp_min(0)  # (B*G, P+N)
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        modality_inputs=batch.modality_inputs,
        position_ids=position_ids,
        logits_to_keep=n + 1,
        use_cache=False,
    )
    logits = out.logits[:, :-1].float()  # (B*G, N+1, V) -> (B*G, N, V): position t predicts completion token t
    targets = batch.input_ids[:, -n:]  # (B*G, N)
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B*G, N)


def reference_logp(raw_model: torch.nn.Module, batch: GRPOBatch) -> torch.Tensor:
    """Completion log-probs of the reference: the same model with its LoRA adapter disabled."""
    with torch.no_grad(), raw_model.language_model.disable_adapter():
        return completion_logp(raw_model, batch)


def grpo_loss(
    logp: torch.Tensor, batch: GRPOBatch, *, epsilon: float, beta: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped policy-gradient loss with a KL penalty, token means per completion, mean over completions.

    Args:
        logp: (B*G, N) current log-probs (with gradient).
        batch: The sampled completions.
        epsilon: Clip range.
        beta: KL weight.

    Returns:
        ``(loss, {"kl", "clip_fraction"})`` (the statistics detached, token means).
    """
    mask = batch.mask.float()  # (B*G, N)
    old = logp.detach() if batch.old_logp is None else batch.old_logp
    ratio = torch.exp(logp - old)  # (B*G, N)
    adv = batch.advantages[:, None]  # (B*G, 1)
    per_token = -torch.min(ratio * adv, ratio.clamp(1 - epsilon, 1 + epsilon) * adv)  # (B*G, N)
    kl = torch.zeros_like(logp)
    if beta and batch.ref_logp is not None:
        d = batch.ref_logp - logp
        kl = torch.exp(d) - d - 1  # k3 estimator, >= 0
        per_token = per_token + beta * kl
    lengths = mask.sum(dim=1).clamp_min(1)  # (B*G,)
    loss = ((per_token * mask).sum(dim=1) / lengths).mean()
    denom = mask.sum().clamp_min(1)
    clipped = ((ratio - 1).abs() > epsilon).float()
    return loss, {"kl": (kl.detach() * mask).sum() / denom, "clip_fraction": (clipped * mask).sum() / denom}


@torch.no_grad()
def sample_group(
    raw_model: torch.nn.Module,
    processor: Any,
    items: Sequence[Any],
    cfg: Any,
    *,
    seed: int,
    device: torch.device,
) -> tuple[GRPOBatch, list[str]]:
    """Sample G completions per prompt, score them and build the :class:`GRPOBatch` (old/ref log-probs included).

    Args:
        raw_model: The unwrapped ``EmoLLMForCausalLM`` (LoRA applied).
        processor: Its processor.
        items: The micro-batch's ``TrainItem`` (prompt = the conversation without its last, assistant turn).
        cfg: The run config.
        seed: Seed of this micro-batch's sampling (the global RNG is left untouched).
        device: Where to compute.

    Returns:
        The batch and the completions' texts.
    """
    from emollm.model.generation import _gen_kwargs
    from emollm.scoring.rewards import RewardSample, combine

    g = cfg.train.grpo
    G = g.group_size
    prompts = []
    for it in items:
        s = it.sample
        msgs = s.messages[:-1] if s.messages and s.messages[-1]["role"] == "assistant" else s.messages
        prompts += [type(s)(messages=msgs, features=s.features, name=s.name)] * G
    enc = processor(prompts, add_generation_prompt=True, padding_side="left").to(device)
    was_training = raw_model.training
    raw_model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        new = raw_model.generate(
            enc.input_ids,
            enc.attention_mask,
            enc.modality_inputs,
            **_gen_kwargs(
                processor,
                g.max_completion_tokens,
                True,
                temperature=g.temperature,
                top_p=g.top_p,
                top_k=None,
                min_new_tokens=1,
            ),
        )  # (B*G, N)
    mask = completion_mask(new, processor.stop_token_ids())  # (B*G, N)
    pad = processor.tokenizer.pad_token_id
    new = torch.where(mask, new, torch.full_like(new, pad))
    texts = processor.decode(new)
    labels = tuple(cfg.data.labels)
    totals, parts = [], {name: [] for name in g.rewards}
    for it, text in zip([it for it in items for _ in range(G)], texts, strict=True):
        sample = RewardSample(label=it.label, labels=labels, length_budget=g.length_budget)
        total, values = combine(text, sample, g.rewards)
        totals.append(total)
        for name, v in values.items():
            parts[name].append(v)
    rewards = torch.tensor(totals, dtype=torch.float32, device=device)
    batch = GRPOBatch(
        input_ids=torch.cat([enc.input_ids, new], dim=1),  # (B*G, P+N)
        attention_mask=torch.cat([enc.attention_mask, mask.long()], dim=1),
        modality_inputs=enc.modality_inputs,
        mask=mask,
        advantages=group_advantages(rewards, G, g.std_eps),
        old_logp=None,
        ref_logp=None,
        rewards=rewards,
        parts={k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in parts.items()},
    )
    if g.iterations > 1:
        batch.old_logp = completion_logp(raw_model, batch)
    if g.beta:
        batch.ref_logp = reference_logp(raw_model, batch)
    raw_model.train(was_training)
    return batch, texts


def step_seed(seed: int, step: int, rank: int, micro: int) -> int:
    """The sampling seed of one micro-batch: a pure function of the run's seed and position (resumable)."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729 + micro * 31) % (2**63 - 1)


def grpo_step(recipe: Any, micro: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """Sample, score and update for one optimizer step (``grpo.iterations`` updates over the same completions).

    Args:
        recipe: The set-up ``SFTRecipe``.
        micro: The step's ``grad_accum`` micro-batches of ``TrainItem``.

    Returns:
        The step's statistics, averaged over processes.
    """
    acc, model, raw, opt = recipe.accelerator, recipe.model, recipe.raw_model, recipe.optimizer
    t = recipe.cfg.train
    g = t.grpo
    # Sampling and the old/reference log-probs run on the unwrapped model, which has no autocast of its own: under the
    # run's autocast, so that the first iteration's ratio against the (autocast) training forward is exactly 1.
    with acc.autocast():
        batches = [
            sample_group(
                raw,
                recipe.processor,
                items,
                recipe.cfg,
                seed=step_seed(t.seed, recipe.global_step, acc.process_index, i),
                device=acc.device,
            )[0]
            for i, items in enumerate(micro)
        ]
    params = [p for p in model.parameters() if p.requires_grad]
    losses, kls, clips, grad_norm = [], [], [], None
    for _ in range(g.iterations):
        for b in batches:
            with acc.accumulate(model):
                loss, stats = grpo_loss(completion_logp(model, b), b, epsilon=g.epsilon, beta=g.beta)
                acc.backward(loss)
                if acc.sync_gradients and t.max_grad_norm:
                    grad_norm = acc.clip_grad_norm_(params, t.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            kls.append(stats["kl"])
            clips.append(stats["clip_fraction"])
    lrs = {grp["name"]: grp["lr"] for grp in opt.param_groups}
    recipe.scheduler.step()
    rewards = torch.cat([b.rewards for b in batches])
    names = list(g.rewards)
    local = torch.stack(
        [
            torch.stack(losses).mean(),
            torch.stack(kls).mean(),
            torch.stack(clips).mean(),
            rewards.mean(),
            rewards.view(-1, g.group_size).std(dim=1).mean(),
            torch.cat([b.mask.sum(dim=1).float() for b in batches]).mean(),
            *[torch.cat([b.parts[n] for b in batches]).mean() for n in names],
        ]
    ).double()
    tokens = float(sum(int(b.attention_mask.sum()) for b in batches))
    summed = acc.reduce(torch.cat([local, torch.tensor([tokens], dtype=torch.float64, device=local.device)]), "sum")
    w = acc.num_processes
    keys = ["loss", "kl", "clip_fraction", "reward", "reward_std", "completion_length"]
    out: dict[str, Any] = dict(zip(keys, (summed[:6] / w).tolist(), strict=True))
    out.update({n: v for n, v in zip(names, (summed[6:-1] / w).tolist(), strict=True)})
    out.update(lr=lrs, tokens=int(summed[-1].item()), samples=len(rewards) * w)
    if grad_norm is not None:
        out["grad_norm"] = float(grad_norm)
    return out


def train_grpo(recipe: Any) -> dict[str, Any]:
    """The GRPO counterpart of ``SFTRecipe.train``: same checkpoints, validation, kill hook and summary.

    Args:
        recipe: A set-up ``SFTRecipe`` whose config has ``train.stage: grpo``.

    Returns:
        The summary (also in ``summary.json``).
    """
    from tqdm.auto import tqdm

    from emollm_train.sft import KILL_ENV

    t = recipe.cfg.train
    data = dataclasses.replace(recipe.data, collator=_items)  # same batch plan, prompts kept as items
    keep_4bit_trainable(recipe.raw_model)
    recipe.model.train()
    bar = tqdm(
        total=recipe.total_steps,
        initial=recipe.global_step,
        desc="grpo",
        dynamic_ncols=True,
        disable=not (recipe.is_main and t.logging.progress),
    )
    started = time.perf_counter()
    tokens_total = 0
    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
    last: dict[str, Any] = {}
    if recipe.global_step < recipe.total_steps:
        for epoch, _, micro in data.micro_batches(recipe.global_step):
            t0 = time.perf_counter()
            last = grpo_step(recipe, micro)
            recipe.data.stream_state = data.stream_state
            recipe.global_step += 1
            dt = time.perf_counter() - t0
            tokens_total += last["tokens"]
            record = {"kind": "train", "step": recipe.global_step, "epoch": epoch, **last}
            record.update(tokens_per_s=last["tokens"] / dt, samples_per_s=last["samples"] / dt, step_time_s=dt)
            recipe._write_record(record)
            if recipe.global_step % t.logging.log_every == 0:
                bar.set_postfix(reward=f"{last['reward']:.3f}", kl=f"{last['kl']:.4f}")
            bar.update(1)
            if recipe.after_step(kill_at):
                break
    bar.close()
    return recipe.finish(started, tokens_total, {"last_loss": last.get("loss"), "last_reward": last.get("reward")})
