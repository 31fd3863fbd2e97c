"""The three architectures: ``seed`` (the write-up's network, exactly), ``s9`` and ``s10`` (ours).

All take RGB floats in [0, 1] and normalise inside with the CIFAR-10 channel
statistics kept as buffers, so a saved model needs no outside context.

``seed`` — reconstruction of the write-up's summary table (192,672 parameters with BN).
Every "conv unit" is conv → norm → ReLU → dropout; a depthwise-separable conv is a
3x3 depthwise conv followed by a 1x1 pointwise conv, then the norm. The table lists
parallel branches one after the other; they are summed.

    C1  3→32 conv3x3 p1 · DS 32→32 p1 · [conv3x3 p1 + conv3x3 d2 p2 + conv3x3 d4 p4]   32x32
    C2  [conv3x3 p0 + conv3x3 d2 p1]  32→30
        [DS p1 + conv3x3 d4 p4]  ·  [conv3x3 p1 + conv3x3 d8 p8]                        30x30
    C3  the same as C2: 30→28
    C4  the same, its last pair 32→64: 28→26
    GAP → conv1x1 64→10

``s9`` — our network under the same rules (C1–C4, no max-pooling, dilated and
depthwise-separable convs, GAP then 1x1 conv, RF > 44, < 200k parameters). It halves
the spatial size twice with strided dilated convs (32→16 in C1, 16→8 in C3), so most
layers run on 16x16 or 8x8 maps: several times fewer multiply-adds than ``seed``. Residual
additions around the inner blocks keep a short gradient path, which is what lets it
train in few epochs. With LN or GN its convs that feed a norm, except the depthwise
ones, are weight-standardised by default (:class:`StdConv2d`), which gives those per-image
norms part of what BN's batch statistics give (docs/MODELS.md).

    C1  conv3x3 3→32 p1 · conv3x3 32→64 s2 d2 p2                           32 → 16
    C2  x + [DS 64→64 p1 · conv3x3 64→64 d2 p2]                           16x16
    C3  conv3x3 64→128 s2 d2 p2 · x + [DS 128→128 p1]                      16 → 8
    C4  x + [DS 128→128 d2 p2] · x + [DS 128→128 p1]                       8x8
    GAP → conv1x1 128→10

``s10`` — ``s9`` with a second residual pair at 16x16 and a depthwise-separable strided conv into
8x8 (:func:`_s10`); the shipped BN/LN/GN comparison is trained on it.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cifarnet.errors import CifarnetError
from cifarnet.nets.norms import DEFAULT_GN_GROUPS, check_groups, check_norm, make_norm

ARCHS = ("s10", "s9", "seed")
DEFAULT_DROPOUT = {"seed": 0.05, "s9": 0.0, "s10": 0.0}  # seed: the write-up's rate
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


WS_MODES = ("off", "all", "except-depthwise")
# The patch-whitening stem (cifarnet.training.whitening fits it): off (a random first conv), or the first conv a
# plain one whose weights the trainer sets from the data, then frozen or trained on.
WHITEN_MODES = ("off", "frozen", "trainable")


def default_ws(arch: str, norm: str) -> str:
    """Weight standardisation by default only where it was measured to help: ours (``s9``, ``s10``) with a
    per-image norm (LN, GN), sparing the depthwise convs, which gain more that way than with every conv
    standardised. With BN it did not help (docs/RESULTS.md); ``seed`` stays the write-up's network."""
    return "except-depthwise" if arch != "seed" and norm in ("ln", "gn") else "off"


def check_ws(ws: str) -> str:
    """The weight-standardisation mode, or a clear refusal."""
    if ws not in WS_MODES:
        raise CifarnetError(f"unknown ws {ws!r}; allowed: {', '.join(WS_MODES)}")
    return ws


class Parallel(nn.Module):
    """Sum of branches that all see the same input (the write-up's "combination" of convs)."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class Residual(nn.Module):
    """``x + body(x)``: an identity shortcut so small nets train in few epochs."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class StdConv2d(nn.Conv2d):
    """A conv whose filters are standardised (zero mean, unit variance over each filter's fan-in) at every call.

    Weight standardisation (Qiao et al., 2019) smooths the loss landscape the way BatchNorm's
    batch statistics do; LayerNorm and GroupNorm, which normalise each image on its own, lack that
    and gain from it. The stored weights are unconstrained, so the parameter count is unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        var, mean = torch.var_mean(w, dim=(1, 2, 3), keepdim=True, correction=0)
        # eps far below any real filter's variance (~1e-3 at init), so the scale really is gone
        return self._conv_forward(x, (w - mean) * torch.rsqrt(var + 1e-10), self.bias)


class CifarNet(nn.Module):
    """A classifier for RGB [0, 1] images that normalises its own input.

    ``config`` holds the arguments of :func:`build_model`, saved with the weights so
    :func:`cifarnet.training.checkpoint.load_model` can rebuild the same network.
    """

    def __init__(self, body: nn.Sequential, config: dict) -> None:
        super().__init__()
        self.config = dict(config)
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1))
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std).flatten(1)


class _Units:
    """Builds conv units with one norm / dropout / weight-standardisation setting, and records every channel count."""

    def __init__(self, norm: str, gn_groups: int, dropout: float, ws: str = "off", whiten: str = "off") -> None:
        self.norm, self.gn_groups, self.dropout, self.whiten = norm, gn_groups, dropout, whiten
        self.conv2d = nn.Conv2d if ws == "off" else StdConv2d  # every conv here feeds a norm, so each may be
        # standardised; a depthwise 3x3 filter is one channel's 9 weights, which zero mean leaves as an edge detector
        self.depthwise_conv2d = StdConv2d if ws == "all" else nn.Conv2d
        self.channels: set[int] = set()

    def _finish(self, convs: list[nn.Module], cout: int) -> nn.Sequential:
        self.channels.add(cout)
        layers = [*convs, make_norm(self.norm, cout, self.gn_groups), nn.ReLU(inplace=True)]
        if self.dropout > 0:
            layers.append(nn.Dropout(self.dropout))
        return nn.Sequential(*layers)

    def conv(self, cin: int, cout: int, padding: int = 1, dilation: int = 1, stride: int = 1) -> nn.Sequential:
        """3x3 conv → norm → ReLU → dropout; the one on the image (3 channels in) is the whitening stem if asked."""
        stem = cin == 3 and self.whiten != "off"  # plain: standardising its filters would undo the whitening
        conv = (nn.Conv2d if stem else self.conv2d)(
            cin, cout, 3, stride=stride, padding=padding, dilation=dilation, bias=False
        )
        conv.weight.requires_grad_(not (stem and self.whiten == "frozen"))
        return self._finish([conv], cout)

    def separable(self, cin: int, cout: int, padding: int = 1, dilation: int = 1, stride: int = 1) -> nn.Sequential:
        """Depthwise 3x3 then pointwise 1x1 (depthwise-separable) → norm → ReLU → dropout."""
        depthwise = self.depthwise_conv2d(
            cin, cin, 3, stride=stride, padding=padding, dilation=dilation, groups=cin, bias=False
        )
        pointwise = self.conv2d(cin, cout, 1, bias=False)
        return self._finish([depthwise, pointwise], cout)


def _blocks(*blocks: nn.Module) -> nn.Sequential:
    """Name the blocks as the write-up does, so layer names read ``body.c2.1...``."""
    return nn.Sequential(OrderedDict(zip(("c1", "c2", "c3", "c4", "head"), blocks)))


def _seed_block(u: _Units, cout: int) -> nn.Sequential:
    """One of C2–C4: three parallel pairs; the first shrinks the map by 2 pixels."""
    return nn.Sequential(
        Parallel(u.conv(32, 32, padding=0), u.conv(32, 32, padding=1, dilation=2)),
        Parallel(u.separable(32, 32), u.conv(32, 32, padding=4, dilation=4)),
        Parallel(u.conv(32, cout), u.conv(32, cout, padding=8, dilation=8)),
    )


def _seed(u: _Units) -> nn.Sequential:
    c1 = nn.Sequential(
        u.conv(3, 32),
        u.separable(32, 32),
        Parallel(u.conv(32, 32), u.conv(32, 32, padding=2, dilation=2), u.conv(32, 32, padding=4, dilation=4)),
    )
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(64, 10, 1, bias=False))
    return _blocks(c1, _seed_block(u, 32), _seed_block(u, 32), _seed_block(u, 64), head)


def _s9(u: _Units) -> nn.Sequential:
    c1 = nn.Sequential(u.conv(3, 32), u.conv(32, 64, stride=2, padding=2, dilation=2))
    c2 = Residual(nn.Sequential(u.separable(64, 64), u.conv(64, 64, padding=2, dilation=2)))
    c3 = nn.Sequential(u.conv(64, 128, stride=2, padding=2, dilation=2), Residual(u.separable(128, 128)))
    c4 = nn.Sequential(Residual(u.separable(128, 128, padding=2, dilation=2)), Residual(u.separable(128, 128)))
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(128, 10, 1, bias=False))
    return _blocks(c1, c2, c3, c4, head)


def _s10(u: _Units) -> nn.Sequential:
    """``s9``'s stem, a second residual pair at 16x16 and a depthwise-separable strided conv into 8x8.

    The extra depth sits where the map is still 16x16 and costs little; the 3x3 64→128 strided
    conv of ``s9`` (74k parameters) becomes a depthwise-separable one (9k), which pays for it.
    """
    c1 = nn.Sequential(u.conv(3, 32), u.conv(32, 64, stride=2, padding=2, dilation=2))
    c2 = nn.Sequential(
        Residual(nn.Sequential(u.conv(64, 64), u.conv(64, 64, padding=2, dilation=2))),
        Residual(nn.Sequential(u.separable(64, 64), u.separable(64, 64))),
    )
    c3 = nn.Sequential(
        u.separable(64, 128, stride=2), Residual(nn.Sequential(u.separable(128, 128), u.separable(128, 128)))
    )
    c4 = nn.Sequential(Residual(nn.Sequential(u.separable(128, 128, padding=2, dilation=2), u.separable(128, 128))))
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(128, 10, 1, bias=False))
    return _blocks(c1, c2, c3, c4, head)


_BUILDERS = {"seed": _seed, "s9": _s9, "s10": _s10}


def check_arch(arch: str) -> str:
    """Return the architecture name, lower-cased, or refuse it with the allowed names."""
    name = str(arch).lower()
    if name not in ARCHS:
        raise CifarnetError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHS)}")
    return name


def check_dropout(dropout: float) -> float:
    """Dropout must be a probability below 1 (1 would zero every activation)."""
    try:
        value = float(dropout)
    except (TypeError, ValueError):
        raise CifarnetError(f"dropout must be a number in [0, 1), got {dropout!r}") from None
    if not 0.0 <= value < 1.0:
        raise CifarnetError(f"dropout must be in [0, 1), got {dropout!r}")
    return value


def check_whiten(whiten: str) -> str:
    """The whitening-stem mode, or a clear refusal."""
    if whiten not in WHITEN_MODES:
        raise CifarnetError(f"unknown whiten {whiten!r}; allowed: {', '.join(WHITEN_MODES)}")
    return whiten


def stem_conv(model: CifarNet) -> nn.Conv2d:
    """The first conv on the image: the one a whitening stem initialises."""
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3)


def build_model(
    arch: str,
    norm: str,
    gn_groups: int = DEFAULT_GN_GROUPS,
    dropout: float | None = None,
    ws: str | None = None,
    whiten: str = "off",
) -> CifarNet:
    """Build ``arch`` with ``norm`` (``bn``, ``gn`` or ``ln``).

    ``gn_groups`` (GroupNorm only) must divide every layer's channel count; ``dropout``
    defaults to the architecture's own (:data:`DEFAULT_DROPOUT`);
    ``ws`` standardises the weights of every conv that feeds a norm (:class:`StdConv2d`): ``all``,
    ``except-depthwise`` or ``off``, by default where it helps (:func:`default_ws`);
    ``whiten`` makes the first conv a whitening stem (:data:`WHITEN_MODES`; :mod:`cifarnet.training.whitening` fits it),
    frozen (not a trainable parameter) or trainable.
    """
    arch, norm = check_arch(arch), check_norm(norm)
    if not isinstance(gn_groups, int) or isinstance(gn_groups, bool):
        raise CifarnetError(f"gn_groups must be a whole number, got {gn_groups!r}")
    rate = check_dropout(DEFAULT_DROPOUT[arch] if dropout is None else dropout)
    ws = default_ws(arch, norm) if ws is None else check_ws(ws)
    if norm == "gn":  # check against every layer first: GroupNorm itself would fail with a bare ValueError
        probe = _Units("bn", gn_groups, rate)
        _BUILDERS[arch](probe)
        check_groups(gn_groups, probe.channels)
    body = _BUILDERS[arch](_Units(norm, gn_groups, rate, ws, check_whiten(whiten)))
    config = {"arch": arch, "norm": norm, "gn_groups": gn_groups, "dropout": rate, "ws": ws}
    if whiten != "off":  # a network without the stem keeps the record it always had: older checkpoints stay current
        config["whiten"] = whiten
    return CifarNet(body, config)


def count_params(model: nn.Module) -> int:
    """Trainable parameters (buffers such as the input statistics are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
