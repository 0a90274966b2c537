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
    "ThresholdState",
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

    def apply_threshold(self, threshold: float, *, z: int | None = None) -> ThresholdState:
        """Re-threshold the cached map: the mask layer's array, and the error labels of slice
        ``z`` (all of them with ``z=None``); returns the numbers the widget shows.

        Layers are only given their (shared) arrays here; the widget decides when to redraw.
        """
        analysis = self.analysis
        cache = analysis.cache
        self.threshold = float(threshold)
        cache.mask(threshold)
        if self.mask is not None and self.mask.data is not cache.buffer:
            self.mask.data = cache.buffer
        if self.errors is not None and cache.gt is not None:
            errors = cache.errors(index=z)
            if self.errors.data is not errors:
                self.errors.data = errors
        positives = cache.n_positive(threshold)
        voxel_ml = abs(float(np.linalg.det(analysis.affine[:3, :3]))) / 1000.0
        return ThresholdState(cache.metrics(threshold),
                              None if z is None else self.slice_scores(z), positives,
                              positives * voxel_ml)

    def slice_scores(self, z: int) -> dict[str, float] | None:
        """Scores of the current mask on display slice ``z`` (clamped; None without GT)."""
        cache = self.analysis.cache
        if cache.gt is None:
            return None
        return cache.slice_metrics(min(max(int(z), 0), cache.shape[0] - 1))

    def lesion_focus(self, lesion: Any) -> tuple[int, tuple[float, ...]]:
        """The display slice and world point (the camera centre) of a lesion's centroid."""
        cx, cy, cz = lesion.centroid_voxel  # canonical (X, Y, Z) -> display (Z, Y', X)
        ny = np.shape(self.source.data)[1]
        world = self.source.data_to_world(np.array([cz, ny - 1 - cy, cx]))
        return round(cz), tuple(float(v) for v in np.asarray(world, dtype=float))


@dataclass(frozen=True)
class ThresholdState:
    """What one threshold gives on a case (see :meth:`CaseResults.apply_threshold`).

    Attributes
    ----------
    metrics : dict or None
        ``dice``, ``iou``, ``precision``, ``recall`` over the scan (None without ground truth).
    slice_metrics : dict or None
        The same on the displayed slice.
    positives : int
        Voxels in the mask.
    volume_ml : float
        Their volume in mL.
    """

    metrics: dict[str, float] | None
    slice_metrics: dict[str, float] | None
    positives: int
    volume_ml: float


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
        results.threshold = None  # a new run starts at the model's default threshold
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

