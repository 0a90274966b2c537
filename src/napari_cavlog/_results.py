"""Result layers tied to the image they were computed from (no Qt).

A run of the anomaly widget analyses one FLAIR image layer (its *source*). Its results (the
anomaly map, the thresholded mask, the optional error labels, the cached :class:`Analysis` and
the threshold last used on it) are kept in one :class:`CaseResults`, looked up by the source layer
itself, never by the layer chosen in a menu at the time. The result layers are named after the
source, inserted directly above it in the layer list and made visible; running another image
creates that image's own layers and leaves every other case's layers untouched (a second patient
can never be written into the first patient's layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._layers import derived_metadata, layer_role
from ._overlay import anomaly_colormap, label_colormap

__all__ = [
    "RESULT_ROLES",
    "CaseResults",
    "ResultRegistry",
    "is_result_layer",
    "set_image_data",
    "zero_layer",
]

#: Layer roles (``metadata["cavlog"]["role"]``) of layers made by the widget, never analysed.
RESULT_ROLES = frozenset({"anomaly", "mask", "errors", "orientation"})

_SLOTS = ("anomaly", "mask", "errors")


@dataclass(eq=False)
class CaseResults:
    """Everything the widget computed for one source image layer.

    Attributes
    ----------
    source : napari.layers.Image
        The analysed FLAIR layer.
    anomaly : napari.layers.Image or None
        ``"<source> anomaly"``: the normalised map in [0, 1].
    mask : napari.layers.Labels or None
        ``"<source> mask"``: ``brain & (map >= threshold)``.
    errors : napari.layers.Labels or None
        ``"<source> errors"``: false positives 1, false negatives 2 (needs ground truth).
    analysis : napari_cavlog._jobs.Analysis or None
        The finished run (None while running or after a cancel).
    threshold : float or None
        The threshold last applied to this case (restored when it is chosen again).
    ground_truth : napari.layers.Labels or None
        The ground-truth layer ``analysis`` is scored against.
    """

    source: Any
    anomaly: Any = None
    mask: Any = None
    errors: Any = None
    analysis: Any = None
    threshold: float | None = None
    ground_truth: Any = None

    def layers(self) -> list[Any]:
        """The existing result layers, bottom to top."""
        return [layer for layer in (self.anomaly, self.mask, self.errors) if layer is not None]


class ResultRegistry:
    """The :class:`CaseResults` of every source layer of one viewer.

    Parameters
    ----------
    viewer : napari.Viewer
    """

    def __init__(self, viewer: Any) -> None:
        self._viewer = viewer
        self._by_source: dict[int, CaseResults] = {}

    def get(self, source: Any) -> CaseResults | None:
        """The results of ``source`` (None when it was never run)."""
        results = self._by_source.get(id(source))
        return results if results is not None and results.source is source else None

    def ensure(self, source: Any) -> CaseResults:
        """The results of ``source``, created empty on first use."""
        results = self.get(source)
        if results is None:
            results = CaseResults(source)
            self._by_source[id(source)] = results
        return results

    def owner(self, layer: Any) -> CaseResults | None:
        """The results a result layer belongs to (None for other layers)."""
        for results in self._by_source.values():
            if any(layer is own for own in results.layers()):
                return results
        return None

    def forget(self, layer: Any) -> None:
        """A layer left the viewer: drop a removed source's entry, or clear a result slot.

        The result layers of a removed source stay in the viewer (they are the user's now); a new
        run on another layer never reuses them.
        """
        self._by_source.pop(id(layer), None)
        for results in self._by_source.values():
            for slot in _SLOTS:
                if getattr(results, slot) is layer:
                    setattr(results, slot, None)

    def prepare(self, source: Any, *, opacity: float) -> CaseResults:
        """Zeroed anomaly and mask layers for a new run on ``source``, shown above it.

        Existing layers of this source are reused in place (same arrays when the shape still
        fits: replacing the array of a shown layer churns GPU textures); missing ones are created
        and inserted directly above ``source``. Every other layer is left as it is.
        """
        results = self.ensure(source)
        results.analysis = None
        shape = tuple(np.shape(source.data))
        layers = self._viewer.layers
        if results.anomaly is None or results.anomaly not in layers:
            results.anomaly = self._insert(_new_anomaly(source, shape, opacity), above=source)
        else:
            zero_layer(results.anomaly, shape, np.float32)
            results.anomaly.contrast_limits = (0.0, 1.0)
        if results.mask is None or results.mask not in layers:
            results.mask = self._insert(_new_mask(source, shape), above=results.anomaly)
        else:
            zero_layer(results.mask, shape)
        if results.errors is not None and results.errors in layers:
            zero_layer(results.errors, shape)
        for layer in (source, *results.layers()):
            layer.visible = True
        return results

    def add_errors(self, results: CaseResults, data: np.ndarray) -> Any:
        """The error-labels layer of ``results`` over ``data``, above its mask."""
        source = results.source
        from napari.layers import Labels

        layer = Labels(
            data, name=f"{source.name} errors (FP magenta, FN green)",
            colormap=label_colormap("errors"), opacity=0.8, scale=source.scale,
            translate=source.translate, metadata=derived_metadata(source.metadata, "errors"))
        results.errors = self._insert(layer, above=results.mask or results.anomaly or source)
        return layer

    def _insert(self, layer: Any, *, above: Any) -> Any:
        layers = self._viewer.layers
        index = layers.index(above) + 1 if above in layers else len(layers)
        layers.insert(index, layer)
        return layer


def is_result_layer(layer: Any) -> bool:
    """True for layers the widget made (never offered as an input)."""
    return layer_role(layer) in RESULT_ROLES


def _new_anomaly(source: Any, shape: tuple[int, ...], opacity: float) -> Any:
    from napari.layers import Image

    layer = Image(
        np.zeros(shape, dtype=np.float32), name=f"{source.name} anomaly",
        colormap=anomaly_colormap(), blending="translucent", contrast_limits=(0.0, 1.0),
        opacity=opacity, scale=source.scale, translate=source.translate,
        metadata=derived_metadata(source.metadata, "anomaly"))
    colorbar = getattr(layer, "colorbar", None)  # napari >= 0.6 draws it on the canvas
    if colorbar is not None:
        colorbar.visible = True
    return layer


def _new_mask(source: Any, shape: tuple[int, ...]) -> Any:
    from napari.layers import Labels

    layer = Labels(
        np.zeros(shape, dtype=np.uint8), name=f"{source.name} mask",
        colormap=label_colormap("mask"), opacity=0.9, scale=source.scale,
        translate=source.translate, metadata=derived_metadata(source.metadata, "mask"))
    layer.contour = 2  # an outline keeps the map visible under the mask
    return layer


def zero_layer(layer: Any, shape: tuple[int, ...], dtype: Any = np.uint8) -> None:
    """Zero a layer's array in place (a new array only when shape or dtype changed): replacing
    the array of a shown layer churns GPU textures."""
    data = layer.data
    if isinstance(data, np.ndarray) and data.shape == shape and data.dtype == dtype:
        data[...] = 0
        layer.refresh()
    else:
        layer.data = np.zeros(shape, dtype=dtype)


def set_image_data(layer: Any, values: np.ndarray) -> None:
    """Copy ``values`` into an image layer's array when it fits, else replace the array."""
    data = layer.data
    if isinstance(data, np.ndarray) and data.shape == values.shape and data.dtype == values.dtype:
        np.copyto(data, values)
        layer.refresh()
    else:
        layer.data = values

