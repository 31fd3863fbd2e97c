"""Predict: upload any picture and see a trained model's top classes for it."""

import random

import streamlit as st

from cifarnet.analysis.predict import FORMATS, MAX_PIXELS, available_models, prepare, top_k
from cifarnet.data.cifar10 import IMAGES_PER_FILE
from cifarnet.data.images import enlarge, enlarge_to, png_bytes, to_hwc
from cifarnet.errors import CifarnetError, shorten
from cifarnet.runs.folders import SHIPPED_TRIO
from cifarnet.ui import charts
from cifarnet.ui.common import checkpoint, data_ready, dataset, header, literal, message, runs

SAMPLE_KEY = "predict_sample"
PREVIEW_PX = 256

header(
    "Predict",
    "Upload a picture of an airplane, car, bird, cat, deer, dog, frog, horse, ship or truck. It is "
    "centre-cropped to a square and shrunk to 32x32 pixels, the size the network was trained on, and a "
    "trained model says what it thinks it shows.",
)

models = available_models(runs())
if not models:
    st.info("No trained model found: finish a run on the Train page first.", icon=":material/hourglass_empty:")
    st.stop()
labels = list(models)
default = next((i for i, name in enumerate(labels) if name.startswith(f"{SHIPPED_TRIO[0]} ")), 0)
choice, k_col = st.columns([3, 1])
label = choice.selectbox("Model", labels, index=default, help="Shipped networks and your finished runs (model.pt)")
k = k_col.slider("Top-k classes", 1, 10, 5)
# Whichever the user chose last is shown: a new upload clears the random pick, a click on the button
# picks a test image even while a file is uploaded.
upload = st.file_uploader(
    "Image",
    type=list(FORMATS),
    on_change=lambda: st.session_state.pop(SAMPLE_KEY, None),
    help=f"Any size up to {MAX_PIXELS // 1_000_000} megapixels; transparency is composited "
    "onto white, animations use their first frame.",
)
if data_ready() and st.button("Or try a random CIFAR-10 test image", icon=":material/casino:"):
    st.session_state[SAMPLE_KEY] = random.randrange(IMAGES_PER_FILE)  # the test file's size
sample = st.session_state.get(SAMPLE_KEY)
if upload is None and sample is None:
    st.info("Upload an image to classify it.", icon=":material/upload:")
    st.stop()

if sample is None:
    name, content = shorten(upload.name), upload.getvalue()
else:
    data = dataset()
    if data is None:
        st.stop()
    name = f"test image #{sample}, a {data.classes[int(data.test_y[sample])]}"
    content = png_bytes(to_hwc(data.test_x[sample]))
try:
    picture = prepare(content)
    model = checkpoint(models[label])
except CifarnetError as exc:
    st.error(f"**{literal(name)}:** {message(exc)}", icon=":material/block:")
    st.stop()

ranked = top_k(model, picture.view, k)
best, prob = ranked[0]
original, seen, bars = st.columns([1, 1, 2], gap="large")
with original:
    st.markdown(f"**{literal(name)}**")
    st.image(enlarge_to(picture.preview, PREVIEW_PX))
with seen:
    st.markdown("**What the model sees** (32x32)")
    st.image(enlarge(picture.view, PREVIEW_PX // 32))
with bars:
    st.metric("prediction", best, f"{100 * prob:.1f}% probability", delta_color="off", delta_arrow="off", border=True)
    st.plotly_chart(charts.topk_figure(ranked), width="stretch")
st.caption(
    "The probabilities come from a softmax over the 10 CIFAR-10 classes, so a picture of something "
    "else still gets spread over them: the model cannot answer 'none of these'."
)
