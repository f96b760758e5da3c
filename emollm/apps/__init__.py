"""The applications built on the model: ``analyze`` (the clue mode and trained checkpoints), ``chat``, the text-LLM
reasoner, ``assess`` (the clinician's assistant), ``serve`` (HTTP service and page) and ``demo``.

Imports: anything of ``emollm`` below it (media, encoders, clues, model, checkpoints, data, jobs); never a recipe.
"""
