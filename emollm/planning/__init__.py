"""Planning whole runs before they start: the per-GPU memory plan of a training config (``emollm plan``).

Imports: ``runconfig``, ``backbones``, ``model`` and the foundations; nothing imports it but the CLI.
"""
