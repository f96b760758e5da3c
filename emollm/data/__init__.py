"""Typed data for conversations and datasets."""
