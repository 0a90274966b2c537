"""How results are drawn over a scan: colour maps, orientation letters, axis names (no Qt).

Chosen so that map, mask and ground truth can be told apart at the defaults:

* the anomaly map uses a *translucent* inferno whose opacity rises with the value, so low values
  leave the FLAIR grey (bright FLAIR never looks "hot" under a low map) and the map is zero,
  hence invisible, outside the brain; a colour bar is drawn on the canvas;
* the mask is a cyan contour, the ground truth a contour in the BraTS colours
  (``napari_cavlog._layers.GT_COLORS``), the error labels magenta / green fills;
* the canvas carries the patient's orientation (A/P, L/R, see :mod:`napari_cavlog._orient`) and
  the slider is named after the axis it walks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._layers import layer_role

__all__ = [
    "AXIS_LABELS",
    "ERROR_COLORS",
    "MASK_COLORS",
    "anomaly_colormap",
    "label_colormap",
    "name_axes",
    "orientation_points",
    "show_contour",
]

MASK_COLORS = {1: "#00e5ff"}
ERROR_COLORS = {1: "#ff3df2", 2: "#3dff6e"}  # false positive, false negative

#: Display axes ``(Z, Y', X)`` of :func:`napari_cavlog._orient.to_display`.
AXIS_LABELS = ("axial slice (inferior → superior)", "anterior → posterior", "left → right")

_ORIENTATION_NAME = "orientation"


def anomaly_colormap() -> Any:
    """Inferno, transparent up to 0.25 and opacity rising to 0.85 at 0.75 and above.

    A normalised map is rarely near 0 in healthy tissue; without the transparent foot the whole
    brain would be tinted.
    """
    from napari.utils.colormaps import Colormap, ensure_colormap

    values = np.linspace(0.0, 1.0, 64)
    rgba = np.asarray(ensure_colormap("inferno").map(values), dtype=np.float32)
    rgba[:, 3] = 0.85 * np.clip((values - 0.25) / 0.5, 0.0, 1.0)
    return Colormap(rgba, controls=values, name="cavlog anomaly (translucent inferno)")


def label_colormap(kind: str) -> Any:
    """A fresh colormap per labels layer (napari keeps per-layer state on it)."""
    from napari.utils.colormaps import DirectLabelColormap

    colors = {"mask": MASK_COLORS, "errors": ERROR_COLORS}[kind]
    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", **colors})


def show_contour(labels: Any, width: int = 1) -> None:
    """Draw a ground-truth labels layer as an outline (unless the user already chose one)."""
    if getattr(labels, "contour", None) == 0:
        labels.contour = width
        labels.opacity = max(float(labels.opacity), 0.9)


def name_axes(viewer: Any) -> None:
    """Name the three display axes, unless the user or another plugin named them."""
    dims = viewer.dims
    if dims.ndim != 3:
        return
    labels = tuple(str(v) for v in dims.axis_labels)
    if all(label.lstrip("-").isdigit() for label in labels):
        dims.axis_labels = AXIS_LABELS


def orientation_points(viewer: Any, source: Any) -> Any:
    """A 2-D points layer lettering A/P/L/R at the edges of ``source``'s axial plane.

    A 2-D layer in a 3-D viewer is shown on every axial slice. One such layer per viewer, moved
    to the latest analysed image and kept on top; returns it.
    """
    from napari.layers import Points

    scale = np.asarray(source.scale, dtype=float)[-2:]
    origin = np.asarray(source.translate, dtype=float)[-2:]
    extent = (np.asarray(np.shape(source.data)[-2:], dtype=float) - 1) * scale
    lo, hi = origin, origin + extent
    mid = (lo + hi) / 2
    inset = 0.04 * (hi - lo)
    coords = np.array([
        [lo[0] + inset[0], mid[1]],   # row 0 is anterior
        [hi[0] - inset[0], mid[1]],
        [mid[0], lo[1] + inset[1]],   # column 0 is the patient's left (neurological view)
        [mid[0], hi[1] - inset[1]],
    ])
    letters = ["A", "P", "L", "R"]
    for layer in viewer.layers:
        if layer_role(layer) == "orientation":
            layer.data = coords
            layer.features = {"letter": letters}
            viewer.layers.move(viewer.layers.index(layer), len(viewer.layers))
            return layer
    layer = Points(
        coords, ndim=2, name=_ORIENTATION_NAME, features={"letter": letters},
        text={"string": "{letter}", "color": "#ffeb3b", "size": 14}, size=0.01,
        face_color="transparent", border_width=0, blending="translucent_no_depth",
        metadata={"cavlog": {"role": "orientation"}})
    layer.editable = False
    viewer.layers.append(layer)
    return layer
