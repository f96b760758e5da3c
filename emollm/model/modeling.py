"""``EmoLLMForCausalLM``: modality encoders + projectors spliced into any causal LM, by composition.

Shape legend used in comments:
    B    batch size                    L    text length (with placeholder tokens)
    B_m  samples in the batch that have modality m
    T    encoder frames                K    projected tokens per sample
    D_e  encoder width                 D    LLM hidden size

The one merge routine (``embed``) serves training and generation alike: the processor has already expanded every
modality placeholder into exactly as many placeholder tokens as the projector will produce, and ``embed`` overwrites
those positions with one ``masked_scatter`` per modality, raising when the counts disagree.

A fused slot (``multi``, ``ModalityConfig.fuse``) has no tower: ``embed`` runs its sources' towers, fuses their
encoder outputs row by row (``PreFusion``) and projects the result like any other modality's features. A source's
features may be present only for the fused slot (its own slot unused: ``ModalityInputs.placed`` False).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from emollm.encoders import build_encoder
from emollm.model.configuration import MODALITIES, EmoLLMConfig
from emollm.model.projectors import CrossModalFusion, ModalityTypeEmbedding, PreFusion, build_projector
from emollm.utils.tensors import valid_mask


@dataclass
class ModalityInputs:
    """A padded batch of one modality, holding only the samples that have it.

    Attributes:
        features: (B_m, T, ...) encoder inputs padded along T: precomputed features (B_m, T, D_e), or raw inputs of a
            live encoder (a waveform (B_m, T_samples), frames (B_m, T_frames, 3, H, W), ...).
        lengths: (B_m,) valid frames per row.
        sample_index: (B_m,) row of each entry in the full text batch, ascending.
        placed: (B_m,) bool, whether the row's tokens go into its text; False for a row whose features only feed a
            fused slot. None: every row is placed. A fused slot's own entry has empty features (B_m, 1, 0).
    """

    features: Tensor
    lengths: Tensor
    sample_index: Tensor
    placed: Tensor | None = None

    def to(self, device=None, dtype=None) -> ModalityInputs:
        feats = self.features.to(device=device, dtype=dtype) if dtype else self.features.to(device)
        placed = None if self.placed is None else self.placed.to(device)
        return ModalityInputs(feats, self.lengths.to(device), self.sample_index.to(device), placed)


class EmoLLMForCausalLM(nn.Module):
    """Multimodal wrapper around a transformers causal LM (``language_model``), which may be a peft model."""

    def __init__(self, config: EmoLLMConfig, language_model: nn.Module | None = None):
        super().__init__()
        from transformers import AutoModelForCausalLM

        self.config = config
        self.language_model = language_model or AutoModelForCausalLM.from_config(config.hf_text_config())
        dim = config.hidden_size
        fused = config.fused_sources()
        self.towers = nn.ModuleDict(
            {
                m: build_encoder(c.encoder, feature_dim=c.feature_dim, path=c.encoder_path, **c.encoder_options)
                for m, c in config.modalities.items()
                if m not in fused
            }
        )
        self.fusers = nn.ModuleDict(
            {
                m: PreFusion(
                    {s: self.towers[s].output_dim for s in sources},
                    config.modalities[m].feature_dim,
                    config.modalities[m].fuse.kind,
                )
                for m, sources in fused.items()
            }
        )
        self.projectors = nn.ModuleDict(
            {
                m: build_projector(
                    c.projector.kind,
                    c.feature_dim if m in fused else self.towers[m].output_dim,
                    dim,
                    num_queries=c.projector.num_queries,
                    num_layers=c.projector.num_layers,
                    num_heads=c.projector.num_heads,
                    hidden_dim=c.projector.hidden_dim,
                    merge=c.projector.merge,
                    dropout=c.projector.dropout,
                )
                for m, c in config.modalities.items()
            }
        )
        mods = [m for m in MODALITIES if m in config.modalities]  # canonical row order, whatever the dict order
        self.modality_embedding = ModalityTypeEmbedding(mods, dim) if config.modality_type_embeddings else None
        self.fusion = (
            CrossModalFusion(
                dim,
                config.fusion.pairs,
                depth=config.fusion.depth,
                fusion_dim=config.fusion.fusion_dim,
                num_heads=config.fusion.num_heads,
            )
            if config.fusion
            else None
        )

    def train(self, mode: bool = True) -> EmoLLMForCausalLM:
        """Like ``nn.Module.train``, but frozen encoders stay in eval mode (no dropout, SpecAugment or BatchNorm
        statistics updates in a tower that is not being trained)."""
        super().train(mode)
        for tower in self.towers.values():
            if not any(p.requires_grad for p in tower.parameters()):
                tower.eval()
        return self

    # ------------------------------------------------------------------ helpers
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def num_tokens(self, modality: str, input_length: int) -> int:
        """Placeholder tokens one sample of ``modality`` with ``input_length`` frames occupies (a fused slot: one
        fused vector, whatever ``input_length``)."""
        if modality in self.fusers:
            return self.projectors[modality].num_tokens(1)
        frames = self.towers[modality].num_tokens(input_length)
        return self.projectors[modality].num_tokens(frames)

    def connector_modules(self) -> dict[str, nn.Module]:
        """The non-LLM trainable parts besides the encoders: projectors, pre-fusion, type embeddings, fusion."""
        parts: dict[str, nn.Module] = {"projectors": self.projectors}
        if len(self.fusers):
            parts["fusers"] = self.fusers
        if self.modality_embedding is not None:
            parts["modality_embedding"] = self.modality_embedding
        if self.fusion is not None:
            parts["fusion"] = self.fusion
        return parts

    def get_placeholder_mask(self, input_ids: Tensor, modality: str) -> Tensor:
        """(B, L) bool mask of ``modality``'s placeholder positions."""
        token_id = self.config.modalities[modality].token_id
        if token_id < 0:
            raise RuntimeError(f"modality {modality!r} has no placeholder token id; was the tokenizer prepared?")
        return input_ids == token_id

    def get_modality_features(
        self, modality: str, inputs: ModalityInputs, encoded: dict[str, tuple[Tensor, Tensor, Tensor]] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Encoder -> projector for one modality. Returns padded tokens (B_m, K, D) and token lengths (B_m,).

        For a fused slot, ``encoded`` holds its sources' tower outputs ``(features, lengths, sample_index)``; each row
        of ``inputs.sample_index`` must be among every source's rows.
        """
        if modality in self.fusers:
            feats, lengths = self._fuse(modality, inputs.sample_index, encoded or {})  # (B_m, 1, W)
        else:
            feats, lengths = self.towers[modality](inputs.features, inputs.lengths)  # (B_m, T, D_e)
        tokens, token_lengths = self.projectors[modality](feats, lengths)  # (B_m, T, D_e) -> (B_m, K, D)
        if self.modality_embedding is not None:
            tokens = self.modality_embedding(tokens, modality)  # (B_m, K, D)
        return tokens, token_lengths

    def _fuse(
        self, modality: str, rows: Tensor, encoded: dict[str, tuple[Tensor, Tensor, Tensor]]
    ) -> tuple[Tensor, Tensor]:
        """The fused slot's encoder-level input for batch rows ``rows``: (B_f, 1, W) and lengths (B_f,)."""
        fuser = self.fusers[modality]
        feats: dict[str, Tensor] = {}
        lens: dict[str, Tensor] = {}
        for src in fuser.sources:
            if src not in encoded:
                raise ValueError(f"the {modality} slot needs {src} features, but the batch has none")
            x, n, index = encoded[src]
            match = rows.to(index.device)[:, None] == index[None, :]  # (B_f, B_src)
            if not bool(match.any(dim=1).all()):
                raise ValueError(f"the {modality} slot needs {src} features for every row that places it")
            pick = match.float().argmax(dim=1)  # (B_f,) position of each row among the source's rows
            feats[src], lens[src] = x[pick], n[pick]  # (B_f, T_src, D_src), (B_f,)
        fused = fuser(feats, lens)  # (B_f, 1, W)
        return fused, torch.ones(fused.shape[0], dtype=torch.long, device=fused.device)

    # ------------------------------------------------------------------ the merge
    def embed(self, input_ids: Tensor, modality_inputs: dict[str, ModalityInputs] | None = None) -> Tensor:
        """Token embeddings with every placeholder position replaced by its projected modality feature.

        Args:
            input_ids: (B, L) token ids from ``EmoProcessor``.
            modality_inputs: modality -> ``ModalityInputs`` for the samples that have it.

        Returns:
            (B, L, D) input embeddings for the language model.
        """
        embeds = self.get_input_embeddings()(input_ids)  # (B, L) -> (B, L, D)
        modality_inputs = modality_inputs or {}
        for modality in self.config.modalities:
            if modality not in modality_inputs and self.get_placeholder_mask(input_ids, modality).any():
                raise ValueError(
                    f"{modality} placeholder tokens and features do not match: "
                    f"tokens: {int(self.get_placeholder_mask(input_ids, modality).sum())}, features: 0"
                )
        unknown = set(modality_inputs) - set(self.config.modalities)
        if unknown:
            raise ValueError(f"got inputs for modalities {sorted(unknown)} this model was not built with")
        tokens: dict[str, Tensor] = {}
        lengths: dict[str, Tensor] = {}
        index: dict[str, Tensor] = {}
        encoded: dict[str, tuple[Tensor, Tensor, Tensor]] = {}  # tower outputs the fused slots read
        needed = {s for m in modality_inputs if m in self.fusers for s in self.fusers[m].sources}
        for modality, inputs in modality_inputs.items():
            if modality in self.fusers:
                continue
            if modality in needed:  # the tower runs once; its output feeds both this slot and the fused one
                feats, lens = self.towers[modality](inputs.features, inputs.lengths)  # (B_m, T, D_e)
                encoded[modality] = (feats, lens, inputs.sample_index)
            placed = inputs.placed
            if placed is not None and not bool(placed.all()):
                if modality not in needed:
                    raise ValueError(f"{modality} inputs have rows that are neither placed nor feed a fused slot")
                if not bool(placed.any()):
                    continue
            if modality in needed:
                feats, lens, rows = encoded[modality]
                if placed is not None:
                    feats, lens, rows = feats[placed], lens[placed], rows[placed]
                tok, tok_len = self.projectors[modality](feats, lens)  # (B_m, T, D_e) -> (B_m, K, D)
                if self.modality_embedding is not None:
                    tok = self.modality_embedding(tok, modality)
                tokens[modality], lengths[modality], index[modality] = tok, tok_len, rows
            else:
                tokens[modality], lengths[modality] = self.get_modality_features(modality, inputs)
                index[modality] = inputs.sample_index
        for modality, inputs in modality_inputs.items():
            if modality in self.fusers:
                tokens[modality], lengths[modality] = self.get_modality_features(modality, inputs, encoded)
                index[modality] = inputs.sample_index
        if self.fusion is not None and tokens:
            tokens = self.fusion(tokens, lengths, index)
        for modality, feats in tokens.items():
            mask = self.get_placeholder_mask(input_ids, modality)  # (B, L)
            per_sample = mask.sum(dim=1)  # (B,)
            expected = torch.zeros_like(per_sample)
            expected[index[modality]] = lengths[modality].to(per_sample.dtype)
            if not torch.equal(per_sample, expected):
                bad = int((per_sample != expected).nonzero()[0, 0])
                raise ValueError(
                    f"{modality} placeholder tokens and features do not match: tokens: {int(per_sample.sum())}, "
                    f"features: {int(expected.sum())} (first mismatch in batch row {bad}: "
                    f"{int(per_sample[bad])} tokens vs {int(expected[bad])} features)"
                )
            flat = feats[valid_mask(lengths[modality], feats.shape[1])]  # (B_m, K, D) -> (N_m, D)
            embeds = embeds.masked_scatter(mask.unsqueeze(-1), flat.to(embeds.dtype))  # fills row-major order
        return embeds

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        modality_inputs: dict[str, ModalityInputs] | None = None,
        **kwargs,
    ):
        """Causal-LM forward over spliced embeddings; returns the language model's output (loss when labels given)."""
        embeds = self.embed(input_ids, modality_inputs)
        per_layer = self.per_layer_inputs(input_ids)
        if per_layer is not None:
            kwargs["per_layer_inputs"] = per_layer
        return self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **kwargs)

    def per_layer_inputs(self, input_ids: Tensor) -> Tensor | None:
        """Gemma-4's per-layer token embeddings for a spliced batch; None for language models without them.

        Gemma-4 adds an embedding of each token *id* in every layer. Given ``inputs_embeds`` alone it recovers the ids
        by matching embedding rows, which fails where placeholders hold projected features; as
        ``Gemma4ForConditionalGeneration`` does for its media tokens, placeholder positions look up the pad token.

        Returns:
            (B, L, n_layers, d_ple) or None.
        """
        lm = self.language_model
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        text = getattr(base, "model", None)
        if not hasattr(text, "get_per_layer_inputs") or not getattr(text, "hidden_size_per_layer_input", None):
            return None
        ids = input_ids.clone()
        pad = base.config.pad_token_id if base.config.pad_token_id is not None else 0
        for modality in self.config.modalities:
            ids[self.get_placeholder_mask(input_ids, modality)] = pad
        return text.get_per_layer_inputs(ids)  # (B, L) -> (B, L, n_layers, d_ple)

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        modality_inputs: dict[str, ModalityInputs] | None = None,
        **generate_kwargs,
    ) -> Tensor:
        """Generate from a left-padded batch; returns only the new tokens (B, N_new).

        Placeholder ids are always suppressed, so the model can never emit one.
        """
        embeds = self.embed(input_ids, modality_inputs)
        suppress = sorted({c.token_id for c in self.config.modalities.values() if c.token_id >= 0})
        if suppress:
            generate_kwargs["suppress_tokens"] = sorted(
                set(generate_kwargs.get("suppress_tokens") or []) | set(suppress)
            )
        per_layer = self.per_layer_inputs(input_ids)
        if per_layer is None or input_ids.shape[1] < 2:
            return self.language_model.generate(inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs)
        # Gemma-4: `generate` would pass per_layer_inputs to every decoding step, so the prompt but its last token (the
        # end of the generation prompt, never a placeholder) is prefilled here and generate continues from that cache.
        positions = attention_mask.long().cumsum(-1) - 1  # (B, L), left padding as generate computes it
        positions.masked_fill_(attention_mask == 0, 1)
        prefill = self.language_model(
            inputs_embeds=embeds[:, :-1],
            attention_mask=attention_mask[:, :-1],
            position_ids=positions[:, :-1],
            per_layer_inputs=per_layer[:, :-1],
            use_cache=True,
        )
        if generate_kwargs.get("streamer") is not None:
            generate_kwargs["streamer"] = _SkipPrompt(generate_kwargs["streamer"])
        out = self.language_model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=prefill.past_key_values,
            **generate_kwargs,
        )
        return out[:, input_ids.shape[1] :]  # (B, L + N_new) -> (B, N_new)


class _SkipPrompt:
    """Streamer wrapper: ``generate`` called with ``input_ids`` first streams the prompt; callers expect new tokens."""

    def __init__(self, streamer):
        self.streamer, self.first = streamer, True

    def put(self, value) -> None:
        if self.first:
            self.first = False
            return
        self.streamer.put(value)

    def end(self) -> None:
        self.streamer.end()
