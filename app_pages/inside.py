"""Inside: where a trained network finds its evidence, what its layers compute, what each norm does."""

import streamlit as st

from cifarnet.analysis.curves import run_label
from cifarnet.analysis.feature_maps import feature_grid, feature_maps
from cifarnet.analysis.gradcam import grad_cam, overlay
from cifarnet.analysis.predict import top_k
from cifarnet.data.cifar10 import CLASSES
from cifarnet.data.images import enlarge
from cifarnet.nets.layers import default_layer, layers
from cifarnet.runs.folders import SHIPPED_TRIO
from cifarnet.runs.records import MODEL_FILE
from cifarnet.ui import charts
from cifarnet.ui.common import header, literal, runs
from cifarnet.ui.inside import keep_in_link, model_of, norm_stats, pick_image, pick_run, runs_with_models, stats_images

SCALE = 6  # 32 px -> 192 px

header(
    "Inside",
    "Look inside a trained network: where in the picture it finds the evidence for a class "
    "(Grad-CAM), what each layer computes (feature maps), and what BatchNorm, LayerNorm and GroupNorm do to "
    "the activations. The run and test image are kept in the address bar, so a view can be shared as a link.",
)

available = runs_with_models(runs())
run_col, picture_col = st.columns([1, 2], gap="large")
with run_col:
    info = pick_run(available)
model = model_of(info)
with picture_col:
    picked = pick_image(info, CLASSES)
keep_in_link(info, picked)

one, norms, stats = st.tabs(["This model", "All three norms", "Activation statistics"])

with one:
    if picked is None:
        st.info("Pick a picture above.", icon=":material/image:")
    else:
        found = layers(model)
        names = [layer.name for layer in found]
        ranked = top_k(model, picked.image, 5)
        predicted = CLASSES.index(ranked[0][0])
        wrong = picked.label is not None and picked.label != predicted
        other_default = picked.label if wrong else CLASSES.index(ranked[1][0])  # else: why not the runner-up?
        layer_col, class_col = st.columns(2)
        layer = layer_col.selectbox(
            "Grad-CAM layer",
            names,
            index=names.index(default_layer(model)),
            format_func=lambda n: found[names.index(n)].title,
            help="Grad-CAM is usually taken at the last block, whose map the classifier "
            "reads; earlier layers show finer but less class-specific evidence.",
        )
        other = class_col.selectbox(
            "Compare with class",
            range(len(CLASSES)),
            index=other_default,
            format_func=lambda c: CLASSES[c] + (" (true class)" if c == picked.label else ""),
            key=f"inside_other_{picked.name}",
        )
        cams = grad_cam(model, picked.image, layer, [predicted]), grad_cam(model, picked.image, layer, [other])
        probs = cams[0].probs[0]
        picture, bars, cam_pred, cam_other = st.columns([1, 1.4, 1, 1], gap="medium")
        with picture:
            truth = "" if picked.label is None else f", a **{CLASSES[picked.label]}**"
            st.markdown(f"**{literal(picked.name)}**{truth}")
            st.image(enlarge(picked.image, SCALE))
        with bars:
            st.plotly_chart(charts.topk_figure(ranked), width="stretch", key="inside_topk")
        roles = {CLASSES.index(ranked[1][0]): "runner-up", picked.label: "true class", predicted: "predicted"}
        for column, cam, role in ((cam_pred, cams[0], "predicted"), (cam_other, cams[1], roles.get(other, "chosen"))):
            target = int(cam.targets[0])
            column.markdown(f"**Grad-CAM: {CLASSES[target]}** ({role}, {100 * float(probs[target]):.1f}%)")
            column.image(overlay(picked.image, cam.heatmaps[0].numpy(), SCALE))
        st.caption(
            "Bright = the parts of the picture that raise the class's score most, as seen from the chosen "
            "layer (upsampled to 32x32). No colour at all means nothing in the picture speaks for that "
            "class there."
        )

        st.subheader("Feature maps")
        chosen = st.select_slider(
            "Layer", options=names, value=names[0], format_func=lambda n: n, key=f"inside_maps_{info.run_id}"
        )
        shown = found[names.index(chosen)]
        shared = st.toggle(
            "One scale for all channels",
            help="Off: each channel from its own minimum (dark) to "
            "maximum (bright), which shows its pattern. On: one scale, which shows which channels "
            "are strong and which are silent for this picture.",
        )
        facts, grid = st.columns([1.2, 3], gap="large")
        with facts:
            st.metric(
                "output",
                f"{shown.size}x{shown.size}",
                f"{shown.channels} channels",
                border=True,
                delta_color="off",
                delta_arrow="off",
            )
            st.metric(
                "receptive field",
                f"{shown.rf} px",
                border=True,
                help="The square of input pixels one output pixel can see (Receptive field page)",
            )
            field = charts.rf_square_figure(picked.image, shown.rf, shown.jump, shown.size)
            st.plotly_chart(
                field.update_layout(title_text=f"One output sees {shown.rf}x{shown.rf} px", height=300),
                width="stretch",
                key="inside_rf",
            )
        with grid:
            st.markdown(f"**{shown.title}**: {shown.channels} channels")
            st.image(feature_grid(feature_maps(model, picked.image, chosen), shared))
            st.caption(
                "Each cell is one channel's map for this picture, enlarged without smoothing; bright = high "
                "activation. A block's output is after its norms, ReLUs and sums; a conv's output is before "
                "its norm."
            )

with norms:
    shipped = [run_id for run_id in SHIPPED_TRIO if run_id in available]
    compared = st.multiselect(
        "Models",
        list(available),
        default=shipped or [info.run_id],
        max_selections=4,
        format_func=lambda r: run_label(available[r]),
        key="inside_compare",
    )
    explain_as = st.selectbox(
        "Grad-CAM for",
        [None, *range(len(CLASSES))],
        key="inside_compare_class",
        format_func=lambda c: "each model's prediction" if c is None else CLASSES[c],
    )
    if picked is None:
        st.info("Pick a picture above to see it through each model.", icon=":material/image:")
    elif compared:
        truth = "" if picked.label is None else f", a **{CLASSES[picked.label]}**"
        st.markdown(f"**{literal(picked.name)}**{truth}")
        for column, run_id in zip(st.columns(len(compared), gap="medium"), compared):
            other_model = model_of(available[run_id])
            cam = grad_cam(other_model, picked.image, default_layer(other_model), explain_as)
            probs = cam.probs[0]
            best = int(probs.argmax())
            with column:
                column.markdown(f"#### {literal(run_label(available[run_id]))}")
                st.metric(
                    "prediction",
                    CLASSES[best],
                    f"{100 * float(probs[best]):.1f}% probability",
                    delta_color="off",
                    delta_arrow="off",
                    border=True,
                )
                st.image(overlay(picked.image, cam.heatmaps[0].numpy(), SCALE))
                st.caption(f"Grad-CAM for {CLASSES[int(cam.targets[0])]} at {cam.layer}")
                st.plotly_chart(
                    charts.topk_figure(top_k(other_model, picked.image, 3)),
                    width="stretch",
                    key=f"inside_compare_topk_{run_id}",
                )

with stats:
    if not compared:
        st.info("Choose models in the All three norms tab.", icon=":material/touch_app:")
    else:
        batch = st.toggle(
            "BatchNorm with batch statistics (as in training)",
            help="Off: each model runs as it predicts (BatchNorm with its running statistics). "
            "On: BatchNorm normalises with the statistics of these 256 images, as in training.",
        )
        images, source = stats_images()
        keys = tuple(
            (
                run_label(available[r]),
                str(available[r].path / MODEL_FILE),
                (available[r].path / MODEL_FILE).stat().st_mtime,
            )
            for r in compared
        )
        measured = norm_stats(keys, source, batch, images)
        colors = charts.run_colors([label for label, _, _ in keys])
        if source == "synthetic":
            st.caption("(measured on synthetic pattern pictures until the data set is available)")
        st.plotly_chart(charts.norm_spread_figure(measured.norm, colors), width="stretch", key="inside_norm_stats")
        st.caption(
            "Each norm's input (dotted) and its normalised output before the learned scale and shift "
            "(solid), over 256 test images. Spread of per-channel means: how much channels differ once "
            "averaged over all images and pixels. BatchNorm removes it (it subtracts each channel's batch "
            "mean). Spread of per-image means: how much images differ once averaged over all channels; "
            "LayerNorm and GroupNorm remove it (they subtract each image's own mean)."
        )
        st.plotly_chart(charts.relu_stats_figure(measured.relu, colors), width="stretch", key="inside_relu_stats")
        st.caption(
            "After each ReLU: the mean and standard deviation of all activations and the fraction that are "
            "exactly zero (units that pass nothing on for a picture)."
        )
