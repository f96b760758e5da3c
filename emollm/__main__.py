"""``python -m emollm``: the ``emollm`` command, so launchers that start modules run every subcommand unchanged
(``torchrun --nproc-per-node 8 -m emollm features extract ...``, ``accelerate launch -m emollm merr build ...``)."""

from emollm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
