"""Scoring model answers: open-vocabulary emotion parsing and set metrics, and the GRPO reward registry.

Imports: ``labels`` and the foundations only (no torch).
"""
