"""The networks and what can be read off a built one, without training: the architectures (``models``),
normalisation layers by name (``norms``), the layers a user can look into (``layers``), receptive fields
(``receptive_field``), the course write-up's rules (``rules``), the layer summary (``summary``) and all of
these as pandas frames (``tables``). The bottom floor: it imports only :mod:`cifarnet.errors` (and torch,
pandas), so the config, the trainer and every page can build a model without an import cycle.
"""
