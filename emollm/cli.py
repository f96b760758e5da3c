"""The ``emollm`` command line: one dispatch table, each subcommand a ``main(argv) -> int`` in its own module.

Subcommand modules are imported lazily, so ``emollm backbones`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings

from emollm import __version__

# name -> (module, function, one-line help). Modules outside ``emollm`` (emollm_merr, emollm_eval, emollm_train) are
# the recipe packages (repo folders merr/, eval/, train/).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "backbones": (
        "emollm.backbones.cli",
        "cli_main",
        "list the registered LLM backbones (--json); `show NAME --chat FILE`: what one is fed",
    ),
    "demo": ("emollm.apps.demo", "main", "the quick mechanics demo; `demo data` makes the clips of `make demo`"),
    "chat": ("emollm.apps.chat", "main", "questions about a clip (--media), answered from its evidence"),
    "export": ("emollm.checkpoints", "cli_main", "copy a checkpoint; --merge folds LoRA into the base"),
    "analyze": (
        "emollm.apps.analyze",
        "main",
        "emotion probabilities, evidence and reasoning for a clip (or a folder)",
    ),
    "assess": (
        "emollm.apps.assess.cli",
        "main",
        "assessment assistant for clinicians (not a diagnosis); 'assess compare'",
    ),
    "import": ("emollm.checkpoints.published.cli", "main", "import a released checkpoint (emotion-llama, minigpt-v2)"),
    "data": ("emollm.data.corpora_cli", "main", "corpora: list a local copy (RAVDESS, CREMA-D, IEMOCAP, MELD), splits"),
    "fusion": ("emollm.fusion.cli", "main", "classic fusion baselines on cached features: list, train, eval, synth"),
    "features": ("emollm.jobs.features", "main", "feature cache: extract live-encoder features of media files"),
    "score": ("emollm_eval.score", "main", "score predictions against gold labels (dfew, mer2023, ov)"),
    "eval": ("emollm_eval.cli", "main", "run a checkpoint over a dataset; EMER judge scoring; ablate; label-order"),
    "bench": (
        "emollm_eval.compare",
        "main",
        "bench backbones: same recipe across LLM backbones and LoRA/QLoRA, one table",
    ),
    "serve": ("emollm.apps.serve.cli", "main", "HTTP service + web page: POST /v1/analyze, /health, /docs (loopback)"),
    "stream": ("emollm.apps.serve.client", "main", "replay a file as a live stream to WS /v1/stream"),
    "merr": ("emollm_merr.cli", "main", "MERR construction: build, review export|import, au-label"),
    "plan": (
        "emollm.planning.memory",
        "main",
        "will a training config fit? per-GPU memory estimate (meta device, no weights)",
    ),
    "train": (
        "emollm_train.sft",
        "main",
        "train a model from a YAML config: stage 1 pretrain, stage 2 instruct, fine-tune",
    ),
    "validate": ("emollm.runconfig", "validate_main", "check a training config without building a model"),
}


# Top-level module -> the extra that installs it, for "pip install 'emollm[extra]'" hints.
EXTRA_OF_MODULE: dict[str, str] = {
    "deepspeed": "train",
    "datasets": "train",
    "tensorboard": "train",
    "decord": "media",
    "av": "media",
    "cv2": "media",
    "soundfile": "media",
    "PIL": "media",
    "scipy": "media",
    "h5py": "media",
    "open_clip": "media",
    "timm": "media",
    "mediapipe": "clues",
    "parselmouth": "clues",
    "opensmile": "clues",
    "matplotlib": "eval",
    "fastapi": "serve",
    "uvicorn": "serve",
    "python_multipart": "serve",
    "starlette": "serve",
}


class _DropKernelsCommunity(logging.Filter):
    """bitsandbytes logs a harmless "Failed to load CPU gemm_4bit_forward from kernels-community" at import."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "kernels-community" not in record.getMessage()


class _ToStderr(logging.Filter):
    """Hands a third-party logger's records to stderr instead of its own handlers.

    DeepSpeed's logger writes to **stdout** (a ``StreamHandler(sys.stdout)`` it adds at import): on a first run its
    "Setting accelerator to CPU" warning came before the document of ``emollm analyze --json``. As a filter on the
    logger, this keeps every message (on stderr) whatever handlers the library adds later.
    """

    def __init__(self) -> None:
        super().__init__()
        self.formatter = logging.Formatter("[%(name)s %(levelname)s] %(message)s")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or os.environ.get("EMOLLM_THIRD_PARTY_INFO"):
            print(self.formatter.format(record), file=sys.stderr)
        return False


STDOUT_LOGGERS = ("DeepSpeed",)
"""Third-party loggers that write to stdout; :func:`quiet_third_party` sends their warnings to stderr."""


def quiet_third_party() -> None:
    """Keep third-party noise out of a user's terminal and out of stdout, which holds only our output (one JSON
    document with ``--json``): bitsandbytes' kernels-community line, DeepSpeed's stdout logger (warnings go to stderr,
    its INFO lines only with ``EMOLLM_THIRD_PARTY_INFO=1``) and transformers' deprecation warnings (they concern
    transformers' own internals, not anything a user can change)."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropKernelsCommunity())
    for name in STDOUT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ToStderr) for f in logger.filters):
            logger.addFilter(_ToStderr())
    # MediaPipe's C++ side (glog, TFLite) logs INFO/WARNING lines at every landmarker start.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # transformers' per-load "Loading weights" bars and its advisory warnings (deprecations of its own internals).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(transformers|peft|accelerate|torch)(\.|$)")


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: emollm [--version] <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run 'emollm <command> --help' for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``emollm`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if argv[0] in {"-V", "--version", "version"}:
        print(f"emollm {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"emollm: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    quiet_third_party()
    module_name, func_name, _ = COMMANDS[name]
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(rest) or 0)
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing not in EXTRA_OF_MODULE:
            raise
        print(
            f"emollm {name}: needs the '{missing}' package; install it with: "
            f"pip install 'emollm[{EXTRA_OF_MODULE[missing]}]'",
            file=sys.stderr,
        )
        return 1
    except BrokenPipeError:  # `emollm backbones --json | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
