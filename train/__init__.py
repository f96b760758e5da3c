"""Training recipes (not part of the ``emollm`` library, which never imports them).

``RECIPES`` maps a recipe name to its module; each module has ``main(argv) -> int``. One recipe serves every stage
(pretrain, instruct, finetune): the stage is config, not code (see ``train/sft.py`` and ``train/stages.py``).
"""

RECIPES: dict[str, str] = {"sft": "emollm_train.sft"}
