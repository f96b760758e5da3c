"""The multimodal model core: configuration, modeling (towers, projectors, ``masked_scatter`` splicing), projectors,
processing and prompts, LoRA and trainability, generation, precision, and label likelihoods.

Imports: ``backbones``, ``encoders`` and the foundations (``utils``, ``labels``, ``settings``); never checkpoints,
data, apps or recipes.
"""
