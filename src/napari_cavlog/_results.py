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

from collections.abc import Callable
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
    "napari_result_layer",
    "set_image_data",
    "zero_layer",
]

#: Layer roles (``metadata["cavlog"]["role"]``) of layers made by the widget, never analysed.
RESULT_ROLES = frozenset({"anomaly", "mask", "errors", "orientation"})

_SLOTS = ("anomaly", "mask", "errors")
_NAMES = {"anomaly": "anomaly", "mask": "mask", "errors": "errors (FP magenta, FN green)"}
_LABEL_OPACITY = {"mask": 0.9, "errors": 0.8}


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

    def set_analysis(self, analysis: Any) -> None:
        """Adopt a finished run: its map into the anomaly layer, the cache's mask buffer as the
        mask layer's array (the threshold cache writes masks straight into the layer)."""
        self.analysis = analysis
        if self.anomaly is not None:
            set_image_data(self.anomaly, analysis.anomaly)
            self.anomaly.contrast_limits = (0.0, 1.0)
        if self.mask is not None and self.mask.data is not analysis.cache.buffer:
            self.mask.data = analysis.cache.buffer

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
        Anything with a napari-like ``layers`` list (``in``, ``index``, ``insert``, ``remove``).
    make_layer : callable, optional
        ``make_layer(role, data, *, name, metadata, source, opacity)`` -> a new result layer
        (``role`` ``"anomaly"``, ``"mask"`` or ``"errors"``); default :func:`napari_result_layer`.
        Tests pass duck-typed stand-ins, so the registry runs without napari.
    """

    def __init__(self, viewer: Any, *, make_layer: Callable[..., Any] | None = None) -> None:
        self._viewer = viewer
        self._make = make_layer or napari_result_layer
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
            layer = self._new("anomaly", np.zeros(shape, np.float32), source, opacity=opacity)
            results.anomaly = self._insert(layer, above=source)
        else:
            zero_layer(results.anomaly, shape, np.float32)
            results.anomaly.contrast_limits = (0.0, 1.0)
        if results.mask is None or results.mask not in layers:
            layer = self._new("mask", np.zeros(shape, np.uint8), source)
            results.mask = self._insert(layer, above=results.anomaly)
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
        layer = self._new("errors", data, source)
        results.errors = self._insert(layer, above=results.mask or results.anomaly or source)
        return layer

    def remove_errors(self, results: CaseResults) -> None:
        """Drop the error-labels layer of ``results`` (from the viewer too)."""
        errors, results.errors = results.errors, None
        if errors is not None and errors in self._viewer.layers:
            self._viewer.layers.remove(errors)

    def _new(self, role: str, data: np.ndarray, source: Any, *, opacity: float = 1.0) -> Any:
        return self._make(role, data, name=f"{source.name} {_NAMES[role]}",
                          metadata=derived_metadata(source.metadata, role), source=source,
                          opacity=opacity)

    def _insert(self, layer: Any, *, above: Any) -> Any:
        layers = self._viewer.layers
        index = layers.index(above) + 1 if above in layers else len(layers)
        layers.insert(index, layer)
        return layer


def is_result_layer(layer: Any) -> bool:
    """True for layers the widget made (never offered as an input)."""
    return layer_role(layer) in RESULT_ROLES


def napari_result_layer(role: str, data: np.ndarray, *, name: str, metadata: dict[str, Any],
                        source: Any, opacity: float = 1.0) -> Any:
    """A napari result layer over ``data``, drawn over ``source`` (same scale and translate).

    ``"anomaly"``: translucent inferno image in [0, 1] with a colour bar at ``opacity``;
    ``"mask"``: cyan contour labels; ``"errors"``: magenta / green labels.
    """
    from napari.layers import Image, Labels

    common = {"name": name, "scale": source.scale, "translate": source.translate,
              "metadata": metadata}
    if role == "anomaly":
        layer = Image(data, colormap=anomaly_colormap(), blending="translucent",
                      contrast_limits=(0.0, 1.0), opacity=opacity, **common)
        colorbar = getattr(layer, "colorbar", None)  # napari >= 0.6 draws it on the canvas
        if colorbar is not None:
            colorbar.visible = True
        return layer
    layer = Labels(data, colormap=label_colormap(role), opacity=_LABEL_OPACITY[role], **common)
    if role == "mask":
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

