"""Corpus jobs: feature extraction over media folders (``emollm features``), the batch decoder that reads one
file ahead in an isolated worker, and ``distributed``: every corpus job data-parallel under ``torchrun`` /
``accelerate launch`` (ranks, cost-balanced shards, per-rank parts, the merge into the single-process files).

Imports: ``media``, ``encoders``, ``model``, ``data`` and the foundations; never apps or recipes.
"""
