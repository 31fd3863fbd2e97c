"""Overview: what the lab is and where to start."""

import streamlit as st

from cifarnet.analysis.report import percent
from cifarnet.runs.folders import SHIPPED_TRIO
from cifarnet.runs.monitor import NORM_NAMES, ws_note
from cifarnet.ui.app import PAGES, page_path
from cifarnet.ui.common import header, runs

header(
    "cifarnet lab",
    "An interactive lab for small convolutional networks (under 200k parameters) on "
    "CIFAR-10: 32x32 colour photos of 10 classes.",
)

st.markdown("""
Train a network from the sidebar's settings, watch it learn, and look inside it:
BatchNorm vs LayerNorm vs GroupNorm, dilated and depthwise-separable convolutions,
receptive field, augmentation and learning-rate schedules.
""")

trio = [info for run_id in SHIPPED_TRIO for info in runs() if info.pretrained and info.run_id == run_id]
if trio:
    epochs = format(trio[0].config.get("epochs", 0), "g")
    st.caption(
        f"Test accuracy of the networks shipped with the app: the same {trio[0].config.get('arch')} "
        f"architecture, trained {epochs} epochs with the same recipe, differing only in the normalisation "
        f"layer{ws_note(trio)}. Their twins trained with another seed, and the s9 networks, are on the Runs "
        "page. Measured on the CIFAR-10 test set (offline JPEG copy: a slightly lossy re-encoding of "
        "CIFAR-10, within about a point of the original)."
    )
    for col, info in zip(st.columns(len(trio)), trio):  # formatted as README's results table formats them
        norm = info.config.get("norm", "")
        col.metric(
            f"{info.config.get('arch')} with {NORM_NAMES.get(norm, norm)}",
            percent(info.final_acc),
            border=True,
            help=f"Shipped run {info.run_id}: full CIFAR-10 test set, 10,000 images",
        )

st.subheader("Where to start")
steps = {
    "train": "pick settings in the sidebar and launch a short run; watch its curves live.",
    "runs": "every run's settings and accuracy; overlay any runs' curves.",
    "compare": "an experiment's variants side by side, e.g. the shipped BN, LN and GN networks over two seeds.",
    "inside": "where a network looks (Grad-CAM), what its layers compute, what each norm does.",
    "receptive_field": "see how far each layer sees, against the 32-pixel image.",
    "model": "every layer's output shape and parameter count.",
    "misclassified": "the test images a model gets wrong, and its confusion matrix.",
    "predict": "upload any picture and see what a trained model thinks it is.",
}
for name, text in steps.items():
    left, right = st.columns([1, 4], vertical_alignment="center")
    title, icon = PAGES[name]
    left.page_link(page_path(name), label=title, icon=icon)
    right.write(text)

st.info(
    "Settings in the sidebar apply to Train, Receptive field and Model. The address bar keeps them, "
    "so a copied link reopens the same configuration.",
    icon=":material/lightbulb:",
)
