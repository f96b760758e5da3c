"""Tests of emollm.apps (timelines, live sessions)."""
