"""Scoring model answers: open-vocabulary emotion parsing and set metrics, MER2026 / MER-UniBench's emotion-wheel
metrics, label extraction prompt and MER-Prefer (``mer2026``), and the GRPO reward registry.

Imports: ``labels`` and the foundations only (no torch).
"""
