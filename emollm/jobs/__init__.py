"""Corpus jobs: feature extraction over media folders (``emollm features``) and the batch decoder that reads one
file ahead in an isolated worker.

Imports: ``media``, ``encoders``, ``model``, ``data`` and the foundations; never apps or recipes.
"""
