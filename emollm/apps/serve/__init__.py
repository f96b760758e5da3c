"""``emollm serve``: an HTTP service and web page around one loaded analyzer (FastAPI + uvicorn).

Needs the ``serve`` extra (``pip install 'emollm[serve]'``). Modules: :mod:`.app` (routes, errors, the request
path), :mod:`.jobs` (bounded worker pool), :mod:`.upload` (streaming multipart with a size limit), :mod:`.stream`
(``WS /v1/stream``, live sessions), :mod:`.client` (``emollm stream``, the Python client of a live session),
:mod:`.settings`, :mod:`.cli`; the page is plain HTML/JS/CSS in ``static/``.

Example:
    >>> from emollm.apps.serve import ServeSettings, create_app   # doctest: +SKIP
    >>> app = create_app(ServeSettings(analyzer_options={"reasoning": "template"}))  # doctest: +SKIP

Imports: ``apps.analyze``, ``apps.live``, ``apps.timeline``, ``media``, ``labels``; nothing imports it but the CLI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServeSettings", "create_app", "main"]


def __getattr__(name: str) -> Any:  # lazy: `emollm serve --help` and the settings need no FastAPI import
    if name == "create_app":
        from emollm.apps.serve.app import create_app

        return create_app
    if name == "ServeSettings":
        from emollm.apps.serve.settings import ServeSettings

        return ServeSettings
    if name == "main":
        from emollm.apps.serve.cli import main

        return main
    raise AttributeError(f"module 'emollm.apps.serve' has no attribute {name!r}")
