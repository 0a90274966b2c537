"""What the anomaly widget decides and computes, without Qt and without importing napari.

:class:`AnalysisController` is the widget's analysis state: the results of every analysed FLAIR
layer (:class:`napari_cavlog._results.ResultRegistry`), the threshold, the lesion table and the
ground-truth layers already drawn as contours. It knows the layer roles (which layers are FLAIR
scans, ground truths or results), picks the default layers, matches a ground truth to a FLAIR by
case id, validates and prepares a run, says where a finished run starts (the presets), sets and
applies thresholds through the :class:`napari_cavlog._threshold.ThresholdCache`, and tells the
view what to show with plain values and the small frozen dataclasses below.

Layers are duck-typed: anything with ``name``, ``data``, ``metadata``, ``visible``, ``scale``,
``translate``, ``refresh()`` (and ``data_to_world`` for lesion focus) will do; a layer is an image
or labels layer when its class, or a base class, is named ``Image`` or ``Labels`` (napari's are).
The Qt widget, :class:`napari_cavlog._qt.anomaly.AnomalyWidget`, reads its controls, calls one
method here per callback and writes what comes back into its controls and layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._jobs import Analysis, lesion_table
from ._layers import layer_case_id, layer_role
from ._models import demo_checkpoint_path
from ._orient import slice_to_display
from ._presets import Preset, default_threshold, healthy_presets
from ._results import CaseResults, ResultRegistry, ThresholdState, is_result_layer
from ._runner import Outcome

__all__ = [
    "KEEP",
    "AnalysisController",
    "CaseView",
    "Choice",
    "ExplorerData",
    "Finished",
    "GroundTruthChange",
    "PresetView",
    "Redraw",
    "RunPlan",
    "RunSettings",
    "Settled",
    "is_flair_candidate",
    "is_gt_candidate",
    "layer_kind",
]

#: Histogram bins of the threshold explorer.
HISTOGRAM_BINS = 100


def layer_kind(layer: Any) -> str | None:
    """``"image"`` or ``"labels"`` for napari ``Image`` / ``Labels`` layers (by class name, so
    duck-typed stand-ins named so count too); None for every other layer."""
    for cls in type(layer).__mro__:
        if cls.__name__ in ("Image", "Labels"):
            return cls.__name__.lower()
    return None


def is_flair_candidate(layer: Any) -> bool:
    """An image layer the widget did not make: offered as the FLAIR to analyse."""
    return layer_kind(layer) == "image" and not is_result_layer(layer)


def is_gt_candidate(layer: Any) -> bool:
    """A labels layer the widget did not make: offered as the ground truth."""
    return layer_kind(layer) == "labels" and not is_result_layer(layer)


# ----------------------------------------------------------------------------------- view data
@dataclass(frozen=True)
class Choice:
    """A menu choice: select ``layer`` (None: the ``(none)`` entry) when ``change`` is true."""

    change: bool
    layer: Any = None


#: Leave the menu as it is.
KEEP = Choice(False)


@dataclass(frozen=True)
class RunSettings:
    """The model controls of the widget: checkpoint (None: demo weights missing), device,
    batch size and precision."""

    checkpoint: Path | None
    device: str = "auto"
    batch_size: int = 32
    precision: str = "auto"


@dataclass(frozen=True)
class RunPlan:
    """A prepared run: the results it writes into, ``analysis_job``'s keyword arguments and the
    status line while it runs."""

    job: CaseResults
    kwargs: dict[str, Any]
    message: str


@dataclass(frozen=True)
class Finished:
    """How a run ended (see :meth:`AnalysisController.finish`).

    ``error`` (one line) or ``cancelled``, else ``analysis`` with the ``job`` it belongs to and
    the status ``message``.
    """

    job: CaseResults | None
    analysis: Analysis | None = None
    error: str | None = None
    cancelled: bool = False
    message: str = ""


@dataclass(frozen=True)
class CaseView:
    """What to show for the chosen FLAIR layer.

    Attributes
    ----------
    analysed : bool
        It has a finished analysis.
    show_errors : bool
        State of the "show errors" box.
    threshold : float or None
        Where the threshold goes: the case's last one, else the run's start (None: unanalysed).
    preset_key : str or None
        The preset to offer in the menu (the one the run started at), None to leave the menu.
    message : str or None
        A status line (an unanalysed layer), None to leave the status.
    """

    analysed: bool
    show_errors: bool
    threshold: float | None = None
    preset_key: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Redraw:
    """A threshold applied: the numbers to show and the layers to redraw (lightly)."""

    state: ThresholdState
    layers: tuple[Any, ...]


@dataclass(frozen=True)
class Settled:
    """The threshold stopped moving: layers to redraw in full and the new lesion table."""

    layers: tuple[Any, ...]
    lesions: Any


@dataclass(frozen=True)
class ExplorerData:
    """The threshold explorer's curves: map histogram over the brain and, with ground truth, the
    precision-recall curve; the scores at the current threshold."""

    counts: np.ndarray
    edges: np.ndarray
    recall: np.ndarray | None
    precision: np.ndarray | None
    threshold: float
    metrics: dict[str, float] | None


@dataclass(frozen=True)
class PresetView:
    """The healthy-preset button, its note and the oracle button."""

    healthy_value: float | None
    healthy_text: str
    note: str
    gt_enabled: bool


@dataclass(frozen=True)
class GroundTruthChange:
    """A new ground truth scored against the cached map.

    ``error`` (the chosen layer does not fit: scored without ground truth), ``errors_off`` (the
    error overlay must go: no ground truth) and the ``threshold`` to re-apply.
    """

    error: str | None
    errors_off: bool
    threshold: float


# ----------------------------------------------------------------------------------- controller
class AnalysisController:
    """The anomaly widget's analysis state and decisions (no Qt).

    Parameters
    ----------
    viewer : napari.Viewer
        Anything with a napari-like ``layers`` list.
    chosen : callable
        ``chosen()`` -> the FLAIR layer chosen in the view (or None); every "current" below is
        that layer's results.
    make_layer : callable, optional
        Result-layer factory of the :class:`ResultRegistry` (default: napari layers).

    Attributes
    ----------
    results : ResultRegistry
    threshold : float
        The threshold in [0, 1] (widget-wide; each case also remembers its own).
    slice_metrics : dict or None
        Scores on the displayed slice, as last computed.
    lesions : cavlog_core.lesions.LesionTable or None
        The lesion table of the current mask, as last computed.
    job : CaseResults or None
        The results the running job writes into.
    """

    def __init__(self, viewer: Any, *, chosen: Callable[[], Any],
                 make_layer: Callable[..., Any] | None = None) -> None:
        self.viewer = viewer
        self.results = ResultRegistry(viewer, make_layer=make_layer)
        self._chosen = chosen
        self.threshold = 0.5
        self.slice_metrics: dict[str, float] | None = None
        self.lesions: Any = None
        self.job: CaseResults | None = None
        self._contoured: set[int] = set()

    # ------------------------------------------------------------------ results of the choice
    @property
    def current(self) -> CaseResults | None:
        """The results of the chosen FLAIR layer (None when never run)."""
        flair = self._chosen()
        return None if flair is None else self.results.get(flair)

    @property
    def analysis(self) -> Analysis | None:
        """The finished analysis of the chosen FLAIR layer."""
        current = self.current
        return None if current is None else current.analysis

    # ------------------------------------------------------------------ layer roles
    def flair_layers(self) -> list[Any]:
        """The viewer's FLAIR candidates, bottom to top."""
        return [layer for layer in self.viewer.layers if is_flair_candidate(layer)]

    def default_flair(self, chosen: Any) -> Choice:
        """Initial choice: the newest FLAIR-like image, unless one is chosen already."""
        images = self.flair_layers()
        return Choice(True, images[-1]) if images and chosen is None else KEEP

    def match_ground_truth(self, flair: Any, gt: Any) -> Choice:
        """The ground truth of ``flair``'s case when the reader made one; the previous case's
        ground truth is dropped; any other choice (the user's labels) is kept."""
        case_id = None if flair is None else layer_case_id(flair)
        if case_id is None or (gt is not None and layer_case_id(gt) == case_id):
            return KEEP
        for layer in self.viewer.layers:
            if is_gt_candidate(layer) and layer_role(layer) == "ground_truth" \
                    and layer_case_id(layer) == case_id:
                return Choice(True, layer)
        if gt is not None and layer_role(gt) == "ground_truth":
            return Choice(True, None)
        return KEEP

    def claim_contour(self, gt: Any) -> bool:
        """True once per reader-made ground truth: draw it as a contour now (afterwards the
        user's own styling is left alone)."""
        if gt is None or id(gt) in self._contoured or layer_role(gt) != "ground_truth":
            return False
        self._contoured.add(id(gt))
        return True

    def inserted(self, layer: Any, flair: Any, gt: Any, *, running: bool) -> str | None:
        """A layer was added: ``"flair"`` (choose it as the FLAIR), ``"ground_truth"`` (match
        the ground truth again) or None."""
        if running or is_result_layer(layer):
            return None
        if layer_kind(layer) == "image" and flair is None:
            return "flair"
        if layer_kind(layer) == "labels" and gt is None:
            return "ground_truth"
        return None

    def removed(self, layer: Any) -> bool:
        """A layer left the viewer; True when the current case just lost its error overlay."""
        owner = self.results.owner(layer)
        self.results.forget(layer)
        return owner is not None and owner is self.current and owner.errors is None

    # ------------------------------------------------------------------ running
    def layer_problem(self, layer: Any) -> str | None:
        """Why ``layer`` cannot be analysed here (not an image layer of this viewer), or None."""
        if layer not in self.viewer.layers or layer_kind(layer) != "image":
            return f"{getattr(layer, 'name', layer)!r} is not an image layer of this viewer"
        return None

    def run_problem(self, flair: Any, gt: Any, checkpoint: Path | None) -> str | None:
        """The first problem with the run's inputs (one line), or None."""
        if flair is None:
            return "choose a FLAIR image layer (open a case folder or a NIfTI file first)"
        if np.ndim(flair.data) != 3:
            return f"layer {flair.name!r}: expected a 3D volume, not {np.shape(flair.data)}"
        if checkpoint is None:
            return (f"the demo model is not installed ({demo_checkpoint_path()}); "
                    "open a checkpoint file or fine-tune a model")
        if not checkpoint.is_file():
            return f"{checkpoint}: checkpoint file not found"
        if gt is not None and np.shape(gt.data) != np.shape(flair.data):
            return (f"ground truth {gt.name!r} has shape {np.shape(gt.data)}, "
                    f"FLAIR {flair.name!r} has {np.shape(flair.data)}")
        return None

    def prepare_run(self, flair: Any, gt: Any, settings: RunSettings, *,
                    opacity: float) -> RunPlan:
        """Zeroed result layers above ``flair`` and the arguments of ``analysis_job``.

        The FLAIR layer's own array and metadata are passed, so a reader-made layer is analysed
        with the reader's ``Case`` (``napari_cavlog._layers.case_from_layer``).
        """
        assert settings.checkpoint is not None, "check run_problem first"
        self.reset_scores()
        job = self.results.prepare(flair, opacity=opacity)
        job.ground_truth = gt
        self.job = job
        kwargs = {
            "flair": np.asarray(flair.data), "metadata": flair.metadata,
            "scale": tuple(flair.scale),
            "name": flair.name, "gt": None if gt is None else np.asarray(gt.data),
            "checkpoint": settings.checkpoint, "device": settings.device,
            "batch_size": settings.batch_size, "precision": settings.precision,
            "mask_out": job.mask.data,
            "errors_out": None if job.errors is None else job.errors.data,
        }
        return RunPlan(job, kwargs, f"running {settings.checkpoint.name} on {flair.name} …")

    def stream(self, event: Any, *, shown_z: int) -> Any:
        """One slice of the running job into its anomaly layer's array; returns the layer when
        that slice is the one shown (the view redraws only then), else None."""
        layer = None if self.job is None else self.job.anomaly
        if layer is None:
            return None
        z = int(event.z)
        layer.data[z] = slice_to_display(np.asarray(event.slice_map))
        return layer if z == shown_z else None

    def finish(self, outcome: Outcome[Analysis]) -> Finished:
        """The job ended: a finished analysis goes into its results and layers."""
        job, self.job = self.job, None
        if outcome.error is not None:
            return Finished(job, error=outcome.error)
        if outcome.cancelled:
            return Finished(job, cancelled=True)
        analysis = outcome.result
        assert analysis is not None and job is not None
        job.set_analysis(analysis)
        return Finished(job, analysis,
                        message=f"done: {analysis.case_id} with {analysis.checkpoint.name}")

    def view(self) -> CaseView:
        """What the widget shows for the chosen FLAIR layer (its own results, or none)."""
        current = self.current
        analysis = None if current is None else current.analysis
        if current is None or analysis is None:
            flair = self._chosen()
            message = None if flair is None else f"{flair.name}: not analysed yet (Run)"
            return CaseView(False, current is not None and current.errors is not None,
                            message=message)
        start, key = default_threshold(analysis.thresholds)
        return CaseView(True, current.errors is not None and analysis.cache.gt is not None,
                        threshold=start if current.threshold is None else current.threshold,
                        preset_key=None if key == "fixed" else key)

    # ------------------------------------------------------------------ threshold
    def set_threshold(self, value: float, *, force: bool = False) -> float | None:
        """Clamp ``value`` to [0, 1] and make it the threshold; returns it, or None when it is
        the threshold already (and not ``force``)."""
        value = min(max(float(value), 0.0), 1.0)
        if value == self.threshold and not force:
            return None
        self.threshold = value
        return value

    def apply_threshold(self, z: int) -> Redraw | None:
        """Re-threshold the current case's map (mask, the error labels of slice ``z``) and score
        it; None before an analysis."""
        current = self.current
        if current is None or current.analysis is None:
            return None
        state = current.apply_threshold(self.threshold, z=z)
        self.slice_metrics = state.slice_metrics
        layers = tuple(layer for layer in (current.mask, current.errors) if layer is not None)
        return Redraw(state, layers)

    @property
    def metrics(self) -> dict[str, float] | None:
        """Scores of the current mask over the scan (None without analysis or ground truth)."""
        analysis = self.analysis
        return None if analysis is None else analysis.cache.metrics(self.threshold)

    def settle(self, *, min_volume_ml: float) -> Settled | None:
        """After the threshold settles: the full error labels and the lesion table."""
        current = self.current
        analysis = None if current is None else current.analysis
        if current is None or analysis is None:
            return None
        layers = []
        if current.errors is not None and analysis.cache.gt is not None:
            analysis.cache.errors()
            layers.append(current.errors)
        if current.mask is not None:
            layers.append(current.mask)
        return Settled(tuple(layers), self.update_lesions(min_volume_ml=min_volume_ml))

    def update_lesions(self, *, min_volume_ml: float) -> Any:
        """The lesion table of the current mask (None before an analysis)."""
        analysis = self.analysis
        self.lesions = None if analysis is None else lesion_table(
            analysis, self.threshold, min_volume_ml=min_volume_ml)
        return self.lesions

    def lesion_focus(self, index: int) -> tuple[int, tuple[float, ...]] | None:
        """Display slice and camera centre of lesion ``index`` of :attr:`lesions` (or None)."""
        current, table = self.current, self.lesions
        if current is None or table is None or not 0 <= index < len(table.lesions):
            return None
        return current.lesion_focus(table.lesions[index])

    def slice_scores(self, z: int) -> dict[str, float] | None:
        """Scores of the current mask on display slice ``z`` (None without ground truth)."""
        current = self.current
        self.slice_metrics = (None if current is None or current.analysis is None
                              else current.slice_scores(z))
        return self.slice_metrics

    def reset_scores(self) -> None:
        """Forget the slice scores and the lesion table (a new run, an unanalysed layer)."""
        self.slice_metrics = None
        self.lesions = None

    def explorer(self) -> ExplorerData | None:
        """The threshold explorer's data for the current case (None before an analysis)."""
        analysis = self.analysis
        if analysis is None:
            return None
        counts, edges = analysis.cache.histogram(bins=HISTOGRAM_BINS)
        pr = analysis.cache.pr_curve()
        return ExplorerData(counts, edges, None if pr is None else pr.recall,
                            None if pr is None else pr.precision, self.threshold,
                            analysis.cache.metrics(self.threshold))

    # ------------------------------------------------------------------ presets
    def preset(self, key: str) -> Preset:
        """The healthy preset ``key`` with its value in the current checkpoint (or None)."""
        analysis = self.analysis
        presets = healthy_presets(None if analysis is None else analysis.thresholds)
        return next(p for p in presets if p.key == key)

    def preset_view(self, key: str) -> PresetView:
        """The preset buttons and note for preset ``key``."""
        preset, analysis = self.preset(key), self.analysis
        missing = (" (not in this checkpoint: fine-tune it to compute)"
                   if analysis is not None and preset.value is None else "")
        text = "Healthy" + ("" if preset.value is None else f": {preset.value:.3f}")
        # The oracle threshold is computed when first asked for (it costs a pass over the scan).
        return PresetView(preset.value, text, f"{preset.label}: {preset.note}{missing}",
                          analysis is not None and analysis.cache.has_lesion)

    def healthy_threshold(self, key: str) -> float | None:
        """The threshold of preset ``key`` (None before an analysis or when missing)."""
        return None if self.analysis is None else self.preset(key).value

    def gt_threshold(self) -> float | None:
        """The ground-truth operating point of the current case (None without lesion)."""
        analysis = self.analysis
        return None if analysis is None else analysis.gt_threshold

    # ------------------------------------------------------------------ ground truth, errors
    def change_ground_truth(self, gt: Any, *, running: bool) -> GroundTruthChange | None:
        """A new ground truth after a run: score the cached map against it (no inference).

        None when there is nothing to rescore (no analysis, a run in progress, the same layer).
        A layer of the wrong shape is refused (``error``) and the map scored without one.
        """
        current = self.current
        if current is None or current.analysis is None or running:
            return None
        if gt is current.ground_truth:  # e.g. the case was chosen again: nothing to rescore
            return None
        analysis = current.analysis
        error = None
        if gt is not None and np.shape(gt.data) != analysis.anomaly.shape:
            error = (f"ground truth {gt.name!r} has shape {np.shape(gt.data)}, "
                     f"the map has {analysis.anomaly.shape}")
            gt = None
        current.analysis = analysis.with_ground_truth(None if gt is None else gt.data)
        current.ground_truth = gt
        kept = self.threshold if current.threshold is None else current.threshold
        return GroundTruthChange(error, gt is None, kept)

    def show_errors(self, shown: bool) -> str | None:
        """Add (``shown``) or remove the current case's error overlay; returns why it cannot be
        shown (one line) or None."""
        current = self.current
        if not shown:
            if current is not None:
                self.results.remove_errors(current)
            return None
        analysis = None if current is None else current.analysis
        if current is None or analysis is None or analysis.cache.gt is None:
            return "errors need a finished run with a ground-truth layer"
        if current.errors is None:
            self.results.add_errors(current, analysis.cache.errors())
        return None
