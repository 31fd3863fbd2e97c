"""A model's structure as pandas frames: receptive field per layer, layer summary, parameters per block.

The Receptive field and Model pages show these as tables and charts; keeping the
conversion here means the pages only draw, and the frames can be tested directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict

import pandas as pd
from torch import nn

from cifarnet.nets.models import build_model, count_params
from cifarnet.nets.receptive_field import RFReport, receptive_field
from cifarnet.nets.rules import Rule
from cifarnet.nets.summary import Summary

IMAGE_SIZE = 32
BLOCK_NAMES = {"c1": "C1", "c2": "C2", "c3": "C3", "c4": "C4", "head": "head (GAP + 1x1)"}


def rf_frame(report: RFReport, head: bool = True) -> pd.DataFrame:
    """One row per field-changing layer, numbered in graph order, with its block name.

    ``head=False`` drops global pooling and the classifier: pooling "sees" the whole map by
    definition, which would hide the field the convolutions themselves reach.
    """
    frame = pd.DataFrame([asdict(row) for row in report.rows])
    frame.insert(0, "#", range(1, len(frame) + 1))
    frame.insert(1, "block", [block_of(name) for name in frame["name"]])
    if not head:
        frame = frame[frame["block"] != BLOCK_NAMES["head"]]
    return frame.rename(columns={"name": "layer"})


def block_of(module_name: str) -> str:
    """``body.c2.0.1`` -> ``C2``: the write-up's block a layer belongs to."""
    parts = module_name.split(".")
    key = parts[1] if len(parts) > 1 and parts[0] == "body" else parts[0]
    return BLOCK_NAMES.get(key, key)


def rf_comparison(archs: Iterable[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """RF growth of several architectures (one long frame, ``arch`` column) and one summary row each.

    The field depends only on kernels, strides and dilations, never on the norm, so the
    models are built with BatchNorm whatever the sidebar says.
    """
    frames, overview = [], []
    for arch in archs:
        model = build_model(arch, "bn")
        report = receptive_field(model)
        frame = rf_frame(report, head=False)
        frame.insert(0, "arch", arch)
        frames.append(frame)
        overview.append(
            {
                "arch": arch,
                "layers": len(report.rows),
                "rf before pooling (px)": report.rf,
                "covers 32 px from layer": rf_exceeds_image(report),
                "smallest map (px)": int(frame["size"].min()),
                "params": count_params(model),
            }
        )
    return pd.concat(frames, ignore_index=True), pd.DataFrame(overview)


def rf_exceeds_image(report: RFReport) -> int | None:
    """The 1-based row at which the field first covers the whole 32-pixel image, if it does."""
    for number, row in enumerate(report.rows, 1):
        if row.rf >= IMAGE_SIZE:
            return number
    return None


def summary_frame(summary: Summary) -> pd.DataFrame:
    """The torchsummary table with the block each layer belongs to."""
    return pd.DataFrame(
        {
            "layer": [row.name for row in summary.layers],
            "block": [block_of(row.module) for row in summary.layers],
            "module": [row.module for row in summary.layers],
            "output shape": [" x ".join(map(str, row.output_shape)) for row in summary.layers],
            "params": [row.params for row in summary.layers],
        }
    )


def params_by_block(summary: Summary) -> pd.DataFrame:
    """Parameters per block (C1-C4, head), in network order: where the budget goes."""
    frame = summary_frame(summary)
    order = list(dict.fromkeys(frame["block"]))
    totals = frame.groupby("block", sort=False)["params"].sum().reindex(order)
    return totals.reset_index()


def params_by_type(model: nn.Module) -> pd.DataFrame:
    """Parameters per layer kind (3x3, dilated, depthwise, 1x1, norm), largest first: where the budget goes."""
    kinds: dict[str, int] = {}
    for module in model.modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if own:
            kinds[_kind(module)] = kinds.get(_kind(module), 0) + own
    frame = pd.DataFrame({"kind": list(kinds), "params": list(kinds.values())})
    return frame.sort_values("params", ascending=False, ignore_index=True)


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        if module.groups > 1 and module.groups == module.in_channels:
            return "depthwise 3x3"
        if module.kernel_size == (1, 1):
            return "1x1 conv"
        return "dilated 3x3" if module.dilation[0] > 1 else "3x3 conv"
    return type(module).__name__


def rules_frame(rules: Sequence[Rule]) -> pd.DataFrame:
    """One row per rule of the write-up: the rule, kept or not, and what the model has."""
    return pd.DataFrame(
        {
            "rule": [r.name for r in rules],
            "kept": ["yes" if r.passed else "NO" for r in rules],
            "this model": [r.found for r in rules],
        }
    )
