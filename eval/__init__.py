"""eval package: emollm's evaluation recipes (importable from the repo root; not shipped in the wheel).

- ``metrics``, ``parsing``, ``datasets``: pure metric code, answer -> label parsing, gold/prediction file readers;
- ``score``: ``emollm score`` (score an existing prediction CSV);
- ``runner``, ``report``: ``emollm eval CONFIG`` (run a checkpoint over a dataset; predictions, metrics, report);
- ``ablation``: modality ablation and label-order sensitivity;
- ``judge``, ``emer``: LLM judges (local or OpenAI-compatible, cached) and EMER clue/label-overlap scoring;
- ``cli``: the ``emollm eval`` command line.

Submodules are imported on demand, so ``import emollm_eval`` stays light.
"""
