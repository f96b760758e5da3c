"""Typed data for conversations and datasets.

Imports: ``model`` (placeholder markers, processing), ``labels`` and the foundations; never checkpoints or apps.
"""
