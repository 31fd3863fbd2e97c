"""Model: every layer's output shape and parameters for the sidebar's configuration."""

import streamlit as st

from cifarnet.nets.rules import check_rules
from cifarnet.nets.summary import summarize
from cifarnet.nets.tables import params_by_block, params_by_type, rules_frame, summary_frame
from cifarnet.runs.monitor import WS_WORDS
from cifarnet.ui import charts
from cifarnet.ui.common import PARAMS_COLUMN, header
from cifarnet.ui.sidebar import configured_model

BUDGET = 200_000

header(
    "Model",
    "The network built from the sidebar's architecture, norm, dropout and weight standardisation: "
    "every layer in the order it runs, the shape of what it outputs (channels x height x width) and how many "
    "weights it learns.",
)

cfg, model = configured_model()
summary = summarize(model)
cols = st.columns(4)
cols[0].metric(
    "total params",
    f"{summary.total_params:,}",
    border=True,
    delta=f"{BUDGET - summary.total_params:,} under the 200k budget",
    delta_color="off",
    delta_arrow="off",
)
cols[1].metric("trainable params", f"{summary.trainable_params:,}", border=True)
cols[2].metric("layers executed", f"{len(summary.layers)}", border=True)
cols[3].metric(
    "memory for one image",
    f"{summary.total_mb:.2f} MB",
    border=True,
    help="Input + activations for forward and backward + parameters, as torchsummary estimates it",
)
ws = cfg.model_args["ws"]
ws_note = (
    f" Here with {WS_WORDS[ws]}: they show as StdConv2d, with the same weights as a Conv2d, standardised at every call."
    if ws in WS_WORDS
    else ""
)
st.caption(
    f"{cfg.arch} with {cfg.norm.upper()}: every norm has 2 affine weights per channel, so the parameter "
    f"count is the same for BN, LN and GN, with or without weight standardisation.{ws_note}"
)

rules = check_rules(model)
with st.expander("The write-up's rules", icon=":material/rule:", expanded=not all(rule.passed for rule in rules)):
    st.dataframe(rules_frame(rules), hide_index=True, width="stretch")
    st.caption("The course exercise's constraints on the network; every architecture here keeps them with every norm.")

table, charts_col = st.columns([3, 2], gap="large")
with table:
    st.dataframe(
        summary_frame(summary), hide_index=True, width="stretch", height=720, column_config={"params": PARAMS_COLUMN}
    )
with charts_col:
    st.plotly_chart(
        charts.bar_figure(params_by_block(summary), "block", "params", "Parameters per block", "block", "parameters"),
        width="stretch",
    )
    st.plotly_chart(
        charts.bar_figure(params_by_type(model), "kind", "params", "Parameters per layer kind", "", "parameters"),
        width="stretch",
        key="by_kind",
    )
    st.caption(
        "Depthwise-separable convs (a 3x3 depthwise + a 1x1 pointwise) cost about a ninth of a full 3x3 "
        "conv with the same channels; that is how these networks stay under 200k parameters."
    )
