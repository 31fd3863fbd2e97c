"""The training engine: one run folder in, a trained model and its records out (``engine``), with the
optimizer and learning-rate schedule (``schedule``), data-parallel processes (``distributed``), checkpoints
that carry a model's config with its weights (``checkpoint``) and a CPU trainer's share of the cores
(``cpu_share``). It may import everything below it (:mod:`cifarnet.errors`, :mod:`cifarnet.nets`,
:mod:`cifarnet.config`, :mod:`cifarnet.recipes`, :mod:`cifarnet.devices`, :mod:`cifarnet.data`,
:mod:`cifarnet.runs`), and nothing above (analysis, ui, cli).
Also here: an average of the weights over the last steps (``averaging``); the patch-whitening first layer
(``whitening``).
"""
