"""Helpers without global state.

Imports: nothing of emollm (everything else may import it).
"""
