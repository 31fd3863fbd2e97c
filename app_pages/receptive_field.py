"""Receptive field: how much of the image each layer's outputs can see."""

import streamlit as st

from cifarnet.nets.models import ARCHS
from cifarnet.nets.receptive_field import receptive_field
from cifarnet.nets.tables import IMAGE_SIZE, rf_comparison, rf_exceeds_image, rf_frame
from cifarnet.ui import charts
from cifarnet.ui.common import PARAMS_COLUMN, header, preview_image
from cifarnet.ui.sidebar import configured_model

header(
    "Receptive field",
    "The receptive field (RF) of a layer is the square of input pixels that can influence "
    "one of its outputs. A classifier needs it to cover the object; here, the whole 32-pixel image.",
)

cfg, model = configured_model()
report = receptive_field(model)
covers = rf_exceeds_image(report)
cols = st.columns(3)
cols[0].metric("architecture", cfg.arch, border=True)
cols[1].metric(
    "receptive field before global pooling",
    f"{report.rf} px",
    border=True,
    help="The field of the features that enter global average pooling",
)
cols[2].metric("covers the 32-px image from layer", "never" if covers is None else f"#{covers}", border=True)

table, chart = st.columns([3, 2], gap="large")
with table:
    st.markdown(f"**Layer by layer: {cfg.arch}**")
    layers = rf_frame(report)
    st.dataframe(
        layers,
        hide_index=True,
        width="stretch",
        height=460,
        column_order=["#", "block", "kernel", "stride", "dilation", "padding", "size", "jump", "rf", "layer", "type"],
        column_config={"rf": st.column_config.NumberColumn("RF (px)", help="receptive field after the layer")},
    )
    st.caption(
        "kernel k, stride s, dilation d, padding p; **size** is the feature map's side after the layer, "
        "**jump** the distance in input pixels between neighbouring outputs. Each layer adds "
        "(d·(k−1))·jump pixels: dilation and earlier strides grow the field fast without extra weights. "
        "Where branches are summed (parallel convs, residuals) the larger field wins."
    )
with chart:
    st.plotly_chart(charts.rf_figure(rf_frame(report, head=False).assign(arch=cfg.arch), IMAGE_SIZE), width="stretch")
    st.caption(
        "Global pooling and the 1x1 classifier are left out: pooling averages the whole map, so the "
        "field that matters is the one the last convolution reaches."
    )

st.subheader("Layer by layer, on a picture")
body = rf_frame(report, head=False)
number = st.select_slider(
    "Layer",
    options=list(body["#"]),
    value=int(body["#"].iloc[-1]),
    format_func=lambda n: f"#{n} {body.loc[body['#'] == n, 'block'].iloc[0]}",
)
row = body[body["#"] == number].iloc[0]
picture, words = st.columns([2, 3], gap="large")
figure = charts.rf_square_figure(preview_image(), int(row["rf"]), int(row["jump"]), int(row["size"]))
picture.plotly_chart(figure, width="stretch")
words.markdown(
    f"After layer **#{number}** ({row['block']}, a {row['kernel']}x{row['kernel']} conv with dilation "
    f"{row['dilation']} and stride {row['stride']}), each output sees a **{row['rf']}x{row['rf']}** square of the "
    f"input, and neighbouring outputs sit **{row['jump']}** pixel(s) apart (the dots): the map is "
    f"{row['size']}x{row['size']}.\n\n"
    "Where the square reaches past the picture it covers zero padding. Slide through the layers to watch "
    "the field grow: a step with stride 2 doubles how far every later kernel reaches."
)

st.subheader("Both architectures")
comparison, overview = rf_comparison(ARCHS)
st.plotly_chart(charts.rf_figure(comparison, IMAGE_SIZE), width="stretch", key="rf_compare")
st.dataframe(overview, hide_index=True, column_config={"params": PARAMS_COLUMN})
st.caption(
    "`seed` keeps 32→26-pixel maps and grows its field with parallel dilated branches (d = 2, 4, 8); "
    "`s9` halves the map twice with strided dilated convs, so later layers' jump is 4 and every 3x3 "
    "kernel reaches four times further. The norm does not change the field."
)
