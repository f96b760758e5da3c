"""Tests of the merr package (MERR construction)."""
