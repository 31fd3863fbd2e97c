"""Run folders: the contract between a trainer process and its readers. It owns each folder's files and
their schemas (``records``), a run's statuses (``status``), creating, listing and stopping runs (``folders``), who
may train under the run limit (``slots``), starting a run as its own process (``launch``), the queue of runs
waiting for a slot (``queue``), experiments as named groups of runs (``experiments``) and following a run from
outside (``monitor``). It may import :mod:`cifarnet.errors`, :mod:`cifarnet.nets`, :mod:`cifarnet.config`,
:mod:`cifarnet.recipes` and :mod:`cifarnet.devices`, never the training engine: runs start as processes
(``python -m cifarnet train``), not as imports.
Also here: sweeps over a grid and random draws (``sweep``); early stopping of a sweep's runs that fall behind
(``early_stop``).
"""
