"""Normalisation layers by name: ``bn``, ``gn`` and ``ln``.

- ``bn``: ``BatchNorm2d`` — statistics over the batch, per channel.
- ``gn``: ``GroupNorm(groups, C)`` — statistics per sample over groups of channels.
  The write-up says "group size of 2"; we read it as ``nn.GroupNorm(2, C)`` (two groups,
  the first argument of the call, which is how that course's code passes it), so the
  default is ``gn_groups=2``. The literal reading (two channels per group) is
  ``--gn-groups 16`` on the seed network. The count must divide every layer's channels.
- ``ln``: ``GroupNorm(1, C)`` — statistics per sample over all of C, H, W, with a
  per-channel affine. That is layer normalisation for images; ``nn.LayerNorm([C,H,W])``
  would tie the layer to one input size and learn C·H·W affine weights, which breaks the
  parameter budget and the network's size independence.

All three have 2·C affine parameters, so a model's parameter count is the same with
every norm.
"""

from __future__ import annotations

from torch import nn

from cifarnet.errors import CifarnetError

DEFAULT_GN_GROUPS = 2  # the write-up's "group size of 2", read as above
_LAYERS = {
    "bn": lambda channels, groups: nn.BatchNorm2d(channels),
    "gn": lambda channels, groups: nn.GroupNorm(groups, channels),
    "ln": lambda channels, groups: nn.GroupNorm(1, channels),
}
NORMS = tuple(_LAYERS)


def check_norm(norm: str) -> str:
    """Return the norm name, lower-cased, or refuse it with the allowed names."""
    name = str(norm).lower()
    if name not in NORMS:
        raise CifarnetError(f"unknown norm {norm!r}; allowed: {', '.join(NORMS)}")
    return name


def check_groups(groups: int, channel_counts: set[int]) -> None:
    """Refuse a GroupNorm group count that does not divide every layer's channels."""
    bad = sorted(c for c in channel_counts if groups < 1 or c % groups)
    if bad:
        options = sorted(g for g in range(1, min(channel_counts) + 1) if all(c % g == 0 for c in channel_counts))
        raise CifarnetError(
            f"gn_groups={groups} does not divide the channel count(s) {bad} of this model; "
            f"allowed: {', '.join(map(str, options))}"
        )


def norm_layers(model: nn.Module) -> list[nn.Module]:
    """Every normalisation layer of ``model`` (each has a per-channel scale ``weight`` and ``bias``)."""
    return [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None]


def make_norm(norm: str, channels: int, gn_groups: int) -> nn.Module:
    """The normalisation layer ``norm`` (checked by :func:`check_norm`) for ``channels`` feature maps."""
    return _LAYERS[norm](channels, gn_groups)
