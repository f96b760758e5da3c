"""The applications built on the model: ``analyze`` (the clue mode and trained checkpoints), ``timeline`` (a clip as
windows), ``live`` (live sessions: timestamped media in, one window per hop out), ``chat``, the text-LLM reasoner,
``assess`` (the clinician's assistant), ``serve`` (HTTP service, live stream and page) and ``demo``.

Imports: anything of ``emollm`` below it (media, encoders, clues, model, checkpoints, data, jobs); never a recipe.
"""
