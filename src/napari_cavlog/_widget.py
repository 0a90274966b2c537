"""The "Anomaly segmentation" dock widget: run a model on a FLAIR layer and explore thresholds.

Thin by design: it reads its inputs, runs :func:`napari_cavlog._jobs.analysis_job` (which calls
``cavlog_core.inference.predict.predict_volume``) in a napari ``thread_worker``, and updates
layers and labels from the events. Thresholding and scores are
:class:`napari_cavlog._threshold.ThresholdCache` calls on the cached map.
"""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QWidget,
)

from ._jobs import Analysis, analysis_job, gt_operating_point
from ._layers import derived_metadata
from ._models import ModelEntry, demo_checkpoint_path, session_models
from ._orient import slice_to_display
from ._qt_common import (
    JobHost,
    LayerCombo,
    device_combo,
    fit_scroll_width,
    job_controls,
    refill_combo,
    scrolling_layout,
)
from ._qt_plots import ThresholdExplorer
from ._runner import Outcome
from ._threshold import ThresholdCache

__all__ = ["AnomalyWidget"]

_SLIDER_STEPS = 1000  # threshold resolution 0.001
_PERCENTILES = ("p85", "p90", "p95", "p98", "p99")
_MASK_COLORS = {1: "#00e5ff"}
_ERROR_COLORS = {1: "#ff3df2", 2: "#3dff6e"}  # false positive, false negative


def _label_colors(colors: dict[int, str]) -> DirectLabelColormap:
    """A fresh colormap per layer (napari keeps per-layer state on it)."""
    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", **colors})
_REFRESH_EVERY_S = 0.1  # overlay redraw rate while slices stream in
_SETTLE_MS = 150  # full error labels and thumbnails once the threshold stops moving


class AnomalyWidget(JobHost, QWidget):
    """Anomaly segmentation of a FLAIR layer with live thresholding and ground-truth comparison.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Notes
    -----
    Scriptable: :meth:`run` (``block=True`` waits), :meth:`cancel`, :meth:`set_checkpoint`, the
    settable :attr:`threshold`, and :attr:`metrics` (``dice``, ``iou``, ``precision``,
    ``recall`` of the current mask over the whole scan; None without ground truth).
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.anomaly_layer: Image | None = None
        self.mask_layer: Labels | None = None
        self.error_layer: Labels | None = None
        self.analysis: Analysis | None = None
        self._worker: Any = None
        self._cancel = threading.Event()
        self._threshold = 0.5
        self._last_refresh = 0.0
        self._slice_metrics: dict[str, float] | None = None
        self._settle_timer = QTimer(self)
        self._settle_timer.setSingleShot(True)
        self._settle_timer.setInterval(_SETTLE_MS)
        self._settle_timer.timeout.connect(self._settle)
        self._build_ui()
        fit_scroll_width(self)
        self._refresh_models()

        self._models_listener = self._refresh_models_safe
        session_models.subscribe(self._models_listener)
        handlers = (
            (self.viewer.layers.events.inserted, self._on_layer_inserted),
            (self.viewer.layers.events.removed, self._on_layer_removed),
            (self.viewer.dims.events.current_step, self._on_step),
        )
        for emitter, callback in handlers:
            emitter.connect(callback)
        listener = self._models_listener

        def _disconnect(*_args: Any) -> None:  # the viewer may outlive this widget
            session_models.unsubscribe(listener)
            for emitter, callback in handlers:
                emitter.disconnect(callback)

        self.destroyed.connect(_disconnect)
        self._select_default_layers()

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        root = scrolling_layout(self)

        inputs = QGroupBox("Input")
        form = QFormLayout(inputs)
        self.flair_combo = LayerCombo(self.viewer, Image)
        self.gt_combo = LayerCombo(self.viewer, Labels, optional=True)
        self.gt_combo.setToolTip("optional ground-truth labels (lesion = label > 0)")
        self.gt_combo.currentTextChanged.connect(self._on_gt_changed)
        self.flair_combo.currentTextChanged.connect(self._on_flair_changed)
        form.addRow("FLAIR", self.flair_combo)
        form.addRow("Ground truth", self.gt_combo)
        root.addWidget(inputs)

        model = QGroupBox("Model")
        form = QFormLayout(model)
        self.model_combo = QComboBox()
        self.model_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(14)
        self.open_button = QPushButton("Open…")
        self.open_button.setToolTip("add a checkpoint file (cavlog train / finetune output)")
        self.open_button.clicked.connect(self._pick_checkpoint)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.open_button)
        form.addRow("Model", row)
        self.device_combo = device_combo()
        form.addRow("Device", self.device_combo)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 1024)
        self.batch_spin.setValue(_predict_default("batch_size", 32))
        form.addRow("Batch size", self.batch_spin)
        root.addWidget(model)

        self.run_button, self.cancel_button, self.progress, self.status = job_controls(
            root, start_label="Run", unit="slices", on_start=self.run, on_cancel=self.cancel)

        thr = QGroupBox("Threshold")
        grid = QGridLayout(thr)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, _SLIDER_STEPS)
        self.slider.setValue(round(self._threshold * _SLIDER_STEPS))
        self.slider.valueChanged.connect(lambda v: self._set_threshold(v / _SLIDER_STEPS, "slider"))
        self.spin = QDoubleSpinBox()
        self.spin.setRange(0.0, 1.0)
        self.spin.setDecimals(3)
        self.spin.setSingleStep(0.001)
        self.spin.setValue(self._threshold)
        self.spin.valueChanged.connect(lambda v: self._set_threshold(v, "spin"))
        grid.addWidget(self.slider, 0, 0, 1, 3)
        grid.addWidget(self.spin, 0, 3)
        self.fixed_button = QPushButton("0.5")
        self.fixed_button.clicked.connect(lambda: setattr(self, "threshold", 0.5))
        self.healthy_button = QPushButton("Healthy")
        self.healthy_button.setToolTip("percentile of the map on healthy slices (checkpoint)")
        self.healthy_button.clicked.connect(self._apply_healthy)
        self.percentile_combo = QComboBox()
        self.percentile_combo.addItems(_PERCENTILES)
        self.percentile_combo.setCurrentText("p95")
        self.percentile_combo.currentTextChanged.connect(self._on_percentile_changed)
        self.gt_button = QPushButton("GT operating point (uses ground truth)")
        self.gt_button.setToolTip("F1-best threshold on this scan: an oracle (uses the GT)")
        self.gt_button.clicked.connect(self._apply_gt_point)
        grid.addWidget(self.fixed_button, 1, 0)
        grid.addWidget(self.healthy_button, 1, 1, 1, 2)
        grid.addWidget(self.percentile_combo, 1, 3)
        grid.addWidget(self.gt_button, 2, 0, 1, 4)
        root.addWidget(thr)

        overlay = QGroupBox("Overlay")
        form = QFormLayout(overlay)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(60)
        self.opacity_slider.valueChanged.connect(self._on_opacity)
        form.addRow("Map opacity", self.opacity_slider)
        self.errors_check = QCheckBox("Show errors (FP magenta, FN green)")
        self.errors_check.toggled.connect(self._on_errors_toggled)
        form.addRow(self.errors_check)
        root.addWidget(overlay)

        scores = QGroupBox("Comparison with ground truth")
        form = QFormLayout(scores)
        self.metric_labels: dict[str, QLabel] = {}
        for key, text in (("dice", "DICE"), ("iou", "IoU"), ("precision", "Precision"),
                          ("recall", "Recall"), ("slice_dice", "DICE (this slice)"),
                          ("positives", "Mask voxels")):
            label = QLabel("–")
            self.metric_labels[key] = label
            form.addRow(text, label)
        root.addWidget(scores)

        self.explorer = ThresholdExplorer()
        root.addWidget(self.explorer)
        root.addStretch(1)
        self._update_preset_buttons()

    # ------------------------------------------------------------------ models
    def _refresh_models_safe(self) -> None:
        try:
            self._refresh_models()
        except RuntimeError:  # the Qt object is gone (widget closed)
            session_models.unsubscribe(self._models_listener)

    def _refresh_models(self) -> None:
        demo = demo_checkpoint_path()
        first = (("Demo model (synthetic data)", str(demo)) if demo.is_file()
                 else ("Demo model (not installed)", None))
        refill_combo(self.model_combo, [first, *((_entry_label(e), str(e.path))
                                                 for e in session_models.entries())])

    def _pick_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a cavlog checkpoint", "",
                                              "Checkpoints (*.pt *.pth);;All files (*)")
        if path:
            self.set_checkpoint(path)

    def set_checkpoint(self, path: str | Path, *, label: str | None = None) -> None:
        """Add checkpoint ``path`` to the session's models and select it."""
        entry = session_models.add(path, label=label, origin="file")
        self._refresh_models()
        self.model_combo.setCurrentIndex(self.model_combo.findData(str(entry.path)))

    def _checkpoint(self) -> Path | None:
        data = self.model_combo.currentData()
        return None if data is None else Path(data)

    # ------------------------------------------------------------------ layers
    def _select_default_layers(self) -> None:
        """Initial choice: the newest FLAIR-like image and the ground truth of the same case."""
        self.flair_combo.refresh()
        self.gt_combo.refresh()
        images = [layer for layer in self.viewer.layers
                  if isinstance(layer, Image) and _role(layer) != "anomaly"]
        if images and self.flair_combo.layer() is None:
            self.flair_combo.select(images[-1])
        self._match_ground_truth()

    def _match_ground_truth(self) -> None:
        """Select the ground-truth layer of the chosen FLAIR's case, when the reader made one."""
        flair = self.flair_combo.layer()
        case_id = None if flair is None else _case_id(flair)
        current = self.gt_combo.layer()
        if case_id is None or (current is not None and _case_id(current) == case_id):
            return
        for layer in self.viewer.layers:
            if isinstance(layer, Labels) and _role(layer) == "ground_truth" \
                    and _case_id(layer) == case_id:
                self.gt_combo.select(layer)
                return
        if current is not None and _role(current) == "ground_truth":
            self.gt_combo.select(None)  # the previous case's ground truth

    def _on_layer_inserted(self, event: Any) -> None:
        self.flair_combo.refresh()
        self.gt_combo.refresh()
        layer = event.value
        if self.running or _role(layer) in ("anomaly", "mask", "errors"):
            return
        if isinstance(layer, Image) and self.flair_combo.layer() is None:
            self.flair_combo.select(layer)
        elif isinstance(layer, Labels) and self.gt_combo.layer() is None:
            self._match_ground_truth()

    def _on_flair_changed(self, _text: str) -> None:
        if not self.running:
            self._match_ground_truth()

    def _on_layer_removed(self, event: Any) -> None:
        removed = event.value
        if removed is self.anomaly_layer:
            self.anomaly_layer = None
        if removed is self.mask_layer:
            self.mask_layer = None
        if removed is self.error_layer:
            self.error_layer = None
            self.errors_check.setChecked(False)
        self.flair_combo.refresh()
        self.gt_combo.refresh()

    def _add_or_reuse(self, attr: str, factory: Any) -> Any:
        layer = getattr(self, attr)
        if layer is not None and layer in self.viewer.layers:
            return layer
        layer = factory()
        setattr(self, attr, layer)
        return layer

    # ------------------------------------------------------------------ running
    def run(self, block: bool = False) -> Any:
        """Run the chosen model on the chosen FLAIR layer.

        Parameters
        ----------
        block : bool
            Wait (processing Qt events) until the run ends.

        Returns
        -------
        napari GeneratorWorker or None
            None when the inputs are invalid (the problem is shown in the widget).
        """
        if self.running:
            self._fail("a run is already in progress")
            return None
        flair = self.flair_combo.layer()
        if flair is None:
            self._fail("choose a FLAIR image layer (open a case folder or a NIfTI file first)")
            return None
        if np.ndim(flair.data) != 3:
            self._fail(f"layer {flair.name!r}: expected a 3D volume, not {np.shape(flair.data)}")
            return None
        checkpoint = self._checkpoint()
        if checkpoint is None:
            self._fail(f"the demo model is not installed ({demo_checkpoint_path()}); "
                       "open a checkpoint file or fine-tune a model")
            return None
        if not checkpoint.is_file():
            self._fail(f"{checkpoint}: checkpoint file not found")
            return None
        gt = self.gt_combo.layer()
        if gt is not None and np.shape(gt.data) != np.shape(flair.data):
            self._fail(f"ground truth {gt.name!r} has shape {np.shape(gt.data)}, "
                       f"FLAIR {flair.name!r} has {np.shape(flair.data)}")
            return None

        self.analysis = None
        self._reset_scores()
        self._prepare_overlay(flair)
        start = functools.partial(
            analysis_job,
            flair=np.asarray(flair.data),
            metadata=flair.metadata,
            scale=tuple(flair.scale),
            name=flair.name,
            gt=None if gt is None else np.asarray(gt.data),
            checkpoint=checkpoint,
            device=self.device_combo.currentText(),
            batch_size=self.batch_spin.value(),
            mask_out=None if self.mask_layer is None else self.mask_layer.data,
            errors_out=None if self.error_layer is None else self.error_layer.data,
        )
        return self._start_job(start, message=f"running {checkpoint.name} on {flair.name} …",
                               block=block)

    def _prepare_overlay(self, flair: Image) -> None:
        shape = np.shape(flair.data)
        meta = derived_metadata(flair.metadata, "anomaly")
        name = f"{flair.name} anomaly"
        zeros = np.zeros(shape, dtype=np.float32)
        layer = self._add_or_reuse("anomaly_layer", lambda: self.viewer.add_image(
            zeros, name=name, colormap="inferno", blending="additive", contrast_limits=(0.0, 1.0),
            opacity=self.opacity_slider.value() / 100, scale=flair.scale, translate=flair.translate,
            metadata=meta))
        if layer.data.shape != shape or layer.data.dtype != np.float32:
            layer.data = zeros
        else:  # in place: replacing arrays of shown layers churns GPU textures
            layer.data[...] = 0
            layer.refresh()
        layer.scale, layer.metadata = flair.scale, meta
        layer.contrast_limits = (0.0, 1.0)
        mask = self._add_or_reuse("mask_layer", lambda: self.viewer.add_labels(
            np.zeros(shape, dtype=np.uint8), name=f"{flair.name} mask",
            colormap=_label_colors(_MASK_COLORS), opacity=0.9, scale=flair.scale,
            translate=flair.translate, metadata=derived_metadata(flair.metadata, "mask")))
        _reset_labels(mask, shape)
        mask.scale = flair.scale
        if mask.contour == 0:  # an outline keeps the map visible under the mask
            mask.contour = 2
        if self.error_layer is not None and self.error_layer in self.viewer.layers:
            _reset_labels(self.error_layer, shape)

    def _on_event(self, event: Any) -> None:
        layer = self.anomaly_layer
        if layer is not None:
            layer.data[int(event.z)] = slice_to_display(np.asarray(event.slice_map))
            now = time.monotonic()
            if now - self._last_refresh > _REFRESH_EVERY_S or event.done == event.total:
                layer.refresh()
                self._last_refresh = now
        self.progress.setMaximum(int(event.total))
        self.progress.setValue(int(event.done))

    def _on_returned(self, outcome: Outcome[Analysis]) -> None:
        if outcome.error is not None:
            self._fail(outcome.error)
            return
        if outcome.cancelled:
            self.status.info(f"cancelled after {self.progress.value()} of "
                             f"{self.progress.maximum()} slices")
            return
        analysis = outcome.result
        assert analysis is not None
        self.analysis = analysis
        if self.anomaly_layer is not None:
            _set_data(self.anomaly_layer, analysis.anomaly)
            self.anomaly_layer.contrast_limits = (0.0, 1.0)
        if self.mask_layer is not None and self.mask_layer.data is not analysis.cache.buffer:
            self.mask_layer.data = analysis.cache.buffer
        if analysis.cache.gt is None:
            self.errors_check.setChecked(False)
        self._update_preset_buttons()
        self._update_explorer()
        preset = analysis.thresholds.get("healthy_p95")
        start = float(preset) if preset is not None else 0.5
        self._set_threshold(start, "run", force=True)
        self.status.info(f"done: {analysis.case_id} with {analysis.checkpoint.name}")

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        for w in (self.flair_combo, self.gt_combo, self.model_combo, self.open_button,
                  self.device_combo, self.batch_spin):
            w.setEnabled(not running)
        if running:
            self.progress.setValue(0)

    def _fail(self, message: str) -> None:
        self.status.error(message)
        show_error(f"Anomaly segmentation: {message}")

    # ------------------------------------------------------------------ threshold
    @property
    def threshold(self) -> float:
        """Current threshold in [0, 1]; setting it re-thresholds the cached map."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._set_threshold(float(value), "api")

    @property
    def metrics(self) -> dict[str, float] | None:
        """``dice``, ``iou``, ``precision``, ``recall`` of the current mask (None without GT)."""
        if self.analysis is None:
            return None
        return self.analysis.cache.metrics(self._threshold)

    @property
    def slice_metrics(self) -> dict[str, float] | None:
        """Scores of the current mask on the displayed axial slice (None without ground truth)."""
        return self._slice_metrics

    def _set_threshold(self, value: float, source: str, *, force: bool = False) -> None:
        value = min(max(float(value), 0.0), 1.0)
        if value == self._threshold and not force:
            return
        self._threshold = value
        if source != "slider":
            self.slider.blockSignals(True)
            self.slider.setValue(round(value * _SLIDER_STEPS))
            self.slider.blockSignals(False)
        if source != "spin":
            self.spin.blockSignals(True)
            self.spin.setValue(value)
            self.spin.blockSignals(False)
        self._apply_threshold()

    def _apply_threshold(self) -> None:
        """The slider callback path: mask + scores from the cache, then light layer refreshes.

        The full-volume error labels and the layer thumbnails are brought up to date once the
        threshold has stopped moving (:meth:`_settle`); until then the error overlay is updated
        on the displayed slice only.
        """
        analysis = self.analysis
        if analysis is None:
            return
        cache = analysis.cache
        cache.mask(self._threshold)
        if self.mask_layer is not None:
            if self.mask_layer.data is not cache.buffer:
                self.mask_layer.data = cache.buffer
            else:
                self.mask_layer.refresh(extent=False, thumbnail=False, highlight=False)
        if self.error_layer is not None and cache.gt is not None:
            errors = cache.errors(index=self._current_z())
            if self.error_layer.data is errors:
                self.error_layer.refresh(extent=False, thumbnail=False, highlight=False)
            else:
                self.error_layer.data = errors
        metrics = cache.metrics(self._threshold)
        self._show_metrics(metrics, cache.n_positive(self._threshold))
        self._update_slice_metrics()
        self.explorer.set_threshold(self._threshold, metrics)
        self._settle_timer.start()

    def _settle(self) -> None:
        """After the threshold settles: full error labels and thumbnails."""
        analysis = self.analysis
        if analysis is None:
            return
        if self.error_layer is not None and analysis.cache.gt is not None:
            analysis.cache.errors()
            self.error_layer.refresh(extent=False)
        if self.mask_layer is not None:
            self.mask_layer.refresh(extent=False)

    def flush(self) -> None:
        """Apply any deferred update now (scripts and tests reading the layers)."""
        if self._settle_timer.isActive():
            self._settle_timer.stop()
            self._settle()

    def _show_metrics(self, metrics: dict[str, float] | None, positives: int) -> None:
        for key in ("dice", "iou", "precision", "recall"):
            self.metric_labels[key].setText("–" if metrics is None else f"{metrics[key]:.3f}")
        self.metric_labels["positives"].setText(f"{positives:,}")

    def _reset_scores(self) -> None:
        for label in self.metric_labels.values():
            label.setText("–")
        self._slice_metrics = None
        self.explorer.clear()
        self._update_preset_buttons()

    def _current_z(self) -> int:
        return int(self.viewer.dims.current_step[0]) if self.viewer.dims.ndim >= 3 else 0

    def _update_slice_metrics(self) -> None:
        analysis = self.analysis
        if analysis is None or analysis.cache.gt is None:
            self._slice_metrics = None
            self.metric_labels["slice_dice"].setText("–")
            return
        z = min(max(self._current_z(), 0), analysis.cache.shape[0] - 1)
        self._slice_metrics = analysis.cache.slice_metrics(z)
        self.metric_labels["slice_dice"].setText(f"{self._slice_metrics['dice']:.3f} (z = {z})")

    def _on_step(self, event: Any = None) -> None:
        if self.analysis is not None:
            self.flush()  # the error labels of the new slice must be current
            self._update_slice_metrics()

    def _update_explorer(self) -> None:
        analysis = self.analysis
        if analysis is None:
            self.explorer.clear()
            return
        counts, edges = analysis.cache.histogram(bins=100)
        pr = analysis.cache.pr_curve()
        if pr is None:
            self.explorer.set_data(counts, edges)
        else:
            self.explorer.set_data(counts, edges, pr.recall, pr.precision)
        self.explorer.set_threshold(self._threshold, analysis.cache.metrics(self._threshold))

    # ------------------------------------------------------------------ presets
    def _update_preset_buttons(self) -> None:
        analysis = self.analysis
        key = f"healthy_{self.percentile_combo.currentText()}"
        value = None if analysis is None else analysis.thresholds.get(key)
        self.healthy_button.setEnabled(value is not None)
        self.healthy_button.setText("Healthy" + ("" if value is None else f": {value:.3f}"))
        gt_value = None if analysis is None else analysis.gt_threshold
        self.gt_button.setEnabled(gt_value is not None)
        self.gt_button.setText("GT operating point (uses ground truth)"
                               + ("" if gt_value is None else f": {gt_value:.3f}"))

    def _on_percentile_changed(self, _text: str) -> None:
        self._update_preset_buttons()

    def _apply_healthy(self) -> None:
        if self.analysis is None:
            return
        value = self.analysis.thresholds.get(f"healthy_{self.percentile_combo.currentText()}")
        if value is not None:
            self.threshold = value

    def _apply_gt_point(self) -> None:
        if self.analysis is not None and self.analysis.gt_threshold is not None:
            self.threshold = self.analysis.gt_threshold

    def _on_gt_changed(self, _text: str) -> None:
        """New ground truth after a run: rebuild the cache (no new inference)."""
        analysis = self.analysis
        if analysis is None or self.running:
            return
        gt = self.gt_combo.layer()
        if gt is not None and np.shape(gt.data) != analysis.anomaly.shape:
            self._fail(f"ground truth {gt.name!r} has shape {np.shape(gt.data)}, "
                       f"the map has {analysis.anomaly.shape}")
            gt = None
        lesion = None if gt is None else np.asarray(gt.data) > 0
        if lesion is None:
            self.errors_check.setChecked(False)
        cache = ThresholdCache(
            analysis.anomaly, analysis.brain, lesion, out=analysis.cache.buffer,
            errors_out=None if self.error_layer is None else analysis.cache.error_buffer)
        self.analysis = Analysis(
            anomaly=analysis.anomaly, brain=analysis.brain, cache=cache,
            thresholds=analysis.thresholds,
            gt_threshold=gt_operating_point(analysis.anomaly, analysis.brain, lesion),
            case_id=analysis.case_id, checkpoint=analysis.checkpoint)
        self._update_preset_buttons()
        self._update_explorer()
        self._set_threshold(self._threshold, "gt", force=True)

    # ------------------------------------------------------------------ overlay controls
    def _on_opacity(self, value: int) -> None:
        if self.anomaly_layer is not None:
            self.anomaly_layer.opacity = value / 100

    def _on_errors_toggled(self, checked: bool) -> None:
        analysis = self.analysis
        if not checked:
            if self.error_layer is not None and self.error_layer in self.viewer.layers:
                self.viewer.layers.remove(self.error_layer)
            self.error_layer = None
            return
        if analysis is None or analysis.cache.gt is None:
            self.status.error("errors need a finished run with a ground-truth layer")
            self.errors_check.blockSignals(True)
            self.errors_check.setChecked(False)
            self.errors_check.blockSignals(False)
            return
        ref = self.mask_layer or self.flair_combo.layer()
        data = analysis.cache.errors()
        self.error_layer = self.viewer.add_labels(
            data, name=f"{analysis.case_id} errors (FP magenta, FN green)",
            colormap=_label_colors(_ERROR_COLORS), opacity=0.8,
            scale=None if ref is None else ref.scale,
            metadata=derived_metadata(None if ref is None else ref.metadata, "errors"))


def _reset_labels(layer: Labels, shape: tuple[int, ...]) -> None:
    """Zero a labels layer in place (a new array only when the shape changed)."""
    data = layer.data
    if isinstance(data, np.ndarray) and data.shape == shape and data.dtype == np.uint8:
        data[...] = 0
        layer.refresh()
    else:
        layer.data = np.zeros(shape, dtype=np.uint8)


def _set_data(layer: Image, values: np.ndarray) -> None:
    """Copy ``values`` into an image layer's array when it fits, else replace the array."""
    data = layer.data
    if isinstance(data, np.ndarray) and data.shape == values.shape and data.dtype == values.dtype:
        np.copyto(data, values)
        layer.refresh()
    else:
        layer.data = values


def _entry_label(entry: ModelEntry) -> str:
    prefix = {"finetuned": "Fine-tuned: ", "file": "File: "}.get(entry.origin, "")
    return prefix + entry.label


def _role(layer: Any) -> str | None:
    return (getattr(layer, "metadata", None) or {}).get("cavlog", {}).get("role")


def _case_id(layer: Any) -> str | None:
    return (getattr(layer, "metadata", None) or {}).get("cavlog", {}).get("case_id")


@functools.cache
def _predict_default(name: str, fallback: int) -> int:
    """A keyword default of ``cavlog_core.inference.predict.predict_volume`` (single source)."""
    import inspect

    try:
        from cavlog_core.inference.predict import predict_volume
    except ImportError:
        return fallback
    param = inspect.signature(predict_volume).parameters.get(name)
    if param is None or param.default is inspect.Parameter.empty:
        return fallback
    return int(param.default)
