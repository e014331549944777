"""A live attention explorer for Jupyter: any image file, any block and head, computed on demand.

Needs a kernel (the static book shows the precomputed explorer instead).
"""
from __future__ import annotations

import altair as alt
import ipywidgets as widgets
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from PIL import Image

from ..data.transforms import eval_transform
from ..study.run_folder import LoadedRun


def cls_attention(run: LoadedRun, path: str) -> tuple[torch.Tensor, int]:
    """[blocks, heads, G²]: the [CLS] query's attention over the patches of the image at ``path``."""
    model = run.model("base")
    transform = eval_transform(run.backbone.image_size, run.backbone.mean, run.backbone.std)
    with Image.open(path) as image:
        x = transform(image.convert("RGB"))[None]
    grid = model.token_layout("vision").grid
    with torch.no_grad(), model.capture("vision.blocks.*.attn.pattern") as cache:
        model.encode_image(x)
    maps = [cache[f"vision.blocks.{i}.attn.pattern"][0, :, 0, 1:1 + grid * grid]
            for i in range(len(model.vision_tower.blocks))]
    return torch.stack(maps), grid


def explorer(run: LoadedRun) -> widgets.VBox:
    """Widgets: an image path, block and head sliders; the heatmap follows every change."""
    first = run.splits["base"].test[0].path if run.splits["base"].test else ""
    path = widgets.Text(value=str(first), description="image", layout=widgets.Layout(width="80%"))
    blocks = len(run.model("base").vision_tower.blocks)
    block = widgets.IntSlider(0, 0, blocks - 1, description="block")
    head = widgets.IntSlider(0, 0, 0, description="head")
    out = widgets.Output()
    state = {}

    def refresh(*_):
        with out:
            out.clear_output(wait=True)
            try:
                if state.get("path") != path.value:
                    state["maps"], state["grid"] = cls_attention(run, path.value)
                    state["path"] = path.value
                    head.max = state["maps"].shape[1] - 1
            except (OSError, ValueError) as err:
                print(f"cannot read {path.value!r}: {err}")
                return
            g = state["grid"]
            rows, cols = np.meshgrid(range(g), range(g), indexing="ij")
            frame = pd.DataFrame({"row": rows.ravel(), "col": cols.ravel(),
                                  "attention": state["maps"][block.value, head.value].numpy()})
            display(alt.Chart(frame).mark_rect().encode(
                x=alt.X("col:O", axis=None), y=alt.Y("row:O", axis=None),
                color=alt.Color("attention:Q", scale=alt.Scale(scheme="inferno")),
                tooltip=["row", "col", "attention"]).properties(width=280, height=280,
                                                                title=f"block {block.value}, head {head.value}"))

    for w in (path, block, head):
        w.observe(refresh, names="value")
    refresh()
    return widgets.VBox([path, widgets.HBox([block, head]), out])
