"""CIFAR-10 in memory and what is done to its pictures: finding, fetching, validating and loading the data
set as uint8 tensors (``cifar10``), augmentation of whole batches on tensors (``augment``) and whole-pixel
enlargement of 32x32 images for display (``images``). It may import :mod:`cifarnet.errors`,
:mod:`cifarnet.config` and :mod:`cifarnet.nets`; it knows nothing of runs, training or pages.
"""
