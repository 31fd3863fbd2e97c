"""Reading runs and trained models after the fact: an experiment's variants side by side (``comparison``),
learning curves as frames (``curves``), the test images a run got wrong (``misclassified``), a picture's
top-k classes (``predict``), Grad-CAM (``gradcam``, and the ``explain`` command's sheets), feature maps
(``feature_maps``), activation statistics (``activation_stats``) and the results tables of the docs
(``report``). It may import every floor below (errors, nets, config, recipes, devices, data, runs,
training), never :mod:`cifarnet.ui` or :mod:`cifarnet.cli`; nothing here imports Streamlit.
"""
