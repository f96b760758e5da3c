"""Helpers without global state."""
