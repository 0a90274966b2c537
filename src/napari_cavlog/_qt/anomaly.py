"""The "Anomaly segmentation" dock widget: run a model on a FLAIR layer and explore thresholds.

Thin by design: it reads its inputs, runs :func:`napari_cavlog._jobs.analysis_job` (which calls
``cavlog_core.inference.predict.predict_volume``) in a napari ``thread_worker``, and updates
layers and labels from the events. Results belong to the image they were computed from
(:class:`napari_cavlog._results.ResultRegistry`): each FLAIR layer gets its own map, mask and
error layers right above it, and choosing a FLAIR layer shows its own results again.
Thresholding and scores are :class:`napari_cavlog._threshold.ThresholdCache` calls on the cached
map; lesions are ``cavlog_core.lesions.find_lesions`` of the mask.
"""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
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

from cavlog_core.lesions import DEFAULT_MIN_LESION_ML

from .._jobs import Analysis, analysis_job, lesion_table
from .._layers import layer_case_id, layer_role
from .._models import ModelEntry, demo_checkpoint_path, session_models
from .._orient import slice_to_display
from .._overlay import name_axes, orientation_points, show_contour
from .._presets import default_threshold, healthy_presets
from .._reader import prefer_this_reader
from .._results import (
    CaseResults,
    ResultRegistry,
    ThresholdState,
    is_result_layer,
    set_image_data,
)
from .._runner import Outcome
from .common import (
    JobHost,
    LayerCombo,
    device_combo,
    fit_scroll_width,
    job_controls,
    model_combo,
    precision_combo,
    refill_combo,
    scrolling_layout,
)
from .lesions import LesionPanel
from .plots import ThresholdExplorer

__all__ = ["AnomalyWidget"]

_SLIDER_STEPS = 1000  # threshold resolution 0.001
_REFRESH_EVERY_S = 0.2  # progress-bar update rate while slices stream in
_SETTLE_MS = 150  # full error labels, lesions and thumbnails once the threshold stops moving


class AnomalyWidget(JobHost, QWidget):
    """Anomaly segmentation of a FLAIR layer with live thresholding and ground-truth comparison.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Notes
    -----
    Scriptable: :meth:`run` (``run(layer, block=True)`` analyses ``layer`` and waits),
    :meth:`results_for` (the result layers of an input layer), :meth:`cancel`,
    :meth:`set_checkpoint`, the settable :attr:`threshold`, :attr:`metrics` (``dice``, ``iou``,
    ``precision``, ``recall`` of the current mask over the whole scan at the scan's voxels; None
    without ground truth) and :attr:`lesions` (the current mask's lesion table). The properties
    :attr:`analysis`, :attr:`anomaly_layer`, :attr:`mask_layer` and :attr:`error_layer` refer to
    the FLAIR layer chosen in the widget.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        prefer_this_reader()  # BraTS folders and NIfTI files open without a reader dialog
        self.results = ResultRegistry(napari_viewer)
        self._job: CaseResults | None = None  # the results the running job writes into
        self._worker: Any = None
        self._cancel = threading.Event()
        self._threshold = 0.5
        self._last_refresh = 0.0
        self._slice_metrics: dict[str, float] | None = None
        self._lesions: Any = None
        self._styled: set[int] = set()  # ground-truth layers already drawn as contours
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
        self.flair_combo = LayerCombo(self.viewer, Image, exclude=is_result_layer)
        self.flair_combo.setToolTip("the FLAIR scan to analyse; its results are drawn above it")
        self.gt_combo = LayerCombo(self.viewer, Labels, optional=True, exclude=is_result_layer)
        self.gt_combo.setToolTip("optional ground-truth labels (lesion = label > 0)")
        self.gt_combo.currentTextChanged.connect(self._on_gt_changed)
        self.flair_combo.currentTextChanged.connect(self._on_flair_changed)
        form.addRow("FLAIR", self.flair_combo)
        form.addRow("Ground truth", self.gt_combo)
        root.addWidget(inputs)

        model = QGroupBox("Model")
        form = QFormLayout(model)
        self.model_combo = model_combo()
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
        self.precision_combo = precision_combo()
        form.addRow("Precision", self.precision_combo)
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
        self.fixed_button.setToolTip("the paper's fixed threshold on the normalised map")
        self.fixed_button.clicked.connect(lambda: setattr(self, "threshold", 0.5))
        self.healthy_button = QPushButton("Healthy")
        self.healthy_button.setToolTip("a threshold set on healthy validation slices (checkpoint)")
        self.healthy_button.clicked.connect(self._apply_healthy)
        self.percentile_combo = QComboBox()
        for preset in healthy_presets(None):
            self.percentile_combo.addItem(preset.label, preset.key)
        self.percentile_combo.setCurrentIndex(self.percentile_combo.findData("healthy_fpr5"))
        self.percentile_combo.currentIndexChanged.connect(self._update_preset_buttons)
        self.preset_note = QLabel("")
        self.preset_note.setWordWrap(True)
        self.preset_note.setStyleSheet("color: #9aa0a6;")
        self.gt_button = QPushButton("GT operating point (uses ground truth)")
        self.gt_button.setToolTip("F1-best threshold on this scan: an oracle (uses the GT)")
        self.gt_button.clicked.connect(self._apply_gt_point)
        grid.addWidget(self.fixed_button, 1, 0)
        grid.addWidget(self.healthy_button, 1, 1, 1, 2)
        grid.addWidget(self.percentile_combo, 1, 3)
        grid.addWidget(self.preset_note, 2, 0, 1, 4)
        grid.addWidget(self.gt_button, 3, 0, 1, 4)
        root.addWidget(thr)

        overlay = QGroupBox("Overlay")
        form = QFormLayout(overlay)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(80)
        self.opacity_slider.valueChanged.connect(self._on_opacity)
        form.addRow("Map opacity", self.opacity_slider)
        self.errors_check = QCheckBox("Show errors (FP magenta, FN green)")
        self.errors_check.toggled.connect(self._on_errors_toggled)
        form.addRow(self.errors_check)
        root.addWidget(overlay)

        self.lesion_panel = LesionPanel(min_volume_ml=DEFAULT_MIN_LESION_ML)
        self.lesion_panel.min_volume_changed.connect(lambda _v: self._update_lesions())
        self.lesion_panel.lesion_chosen.connect(self.go_to_lesion)
        root.addWidget(self.lesion_panel)

        scores = QGroupBox("Comparison with ground truth (at the scan's voxels)")
        form = QFormLayout(scores)
        self.metric_labels: dict[str, QLabel] = {}
        for key, text in (("dice", "DICE (scan)"), ("iou", "IoU"), ("precision", "Precision"),
                          ("recall", "Recall"), ("slice_dice", "DICE (this slice)"),
                          ("positives", "Mask")):
            label = QLabel("–")
            self.metric_labels[key] = label
            form.addRow(text, label)
        root.addWidget(scores)

        self.explorer = ThresholdExplorer()
        root.addWidget(self.explorer)
        root.addStretch(1)
        self._update_preset_buttons()

    # ------------------------------------------------------------------ models
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

    # ------------------------------------------------------------------ results of a layer
    def results_for(self, layer: Any) -> CaseResults | None:
        """The results computed from the FLAIR layer ``layer`` (None when never run)."""
        return self.results.get(layer)

    @property
    def current(self) -> CaseResults | None:
        """The results of the FLAIR layer chosen in the widget."""
        flair = self.flair_combo.layer()
        return None if flair is None else self.results.get(flair)

    @property
    def analysis(self) -> Analysis | None:
        """The finished analysis of the chosen FLAIR layer (None before a run)."""
        current = self.current
        return None if current is None else current.analysis

    @property
    def anomaly_layer(self) -> Image | None:
        current = self.current
        return None if current is None else current.anomaly

    @property
    def mask_layer(self) -> Labels | None:
        current = self.current
        return None if current is None else current.mask

    @property
    def error_layer(self) -> Labels | None:
        current = self.current
        return None if current is None else current.errors

    # ------------------------------------------------------------------ layers
    def _select_default_layers(self) -> None:
        """Initial choice: the newest FLAIR-like image and the ground truth of the same case."""
        self.flair_combo.refresh()
        self.gt_combo.refresh()
        images = [layer for layer in self.viewer.layers
                  if isinstance(layer, Image) and not is_result_layer(layer)]
        if images and self.flair_combo.layer() is None:
            self.flair_combo.select(images[-1])
        self._match_ground_truth()

    def _match_ground_truth(self) -> None:
        """Select the ground-truth layer of the chosen FLAIR's case, when the reader made one."""
        flair = self.flair_combo.layer()
        case_id = None if flair is None else layer_case_id(flair)
        current = self.gt_combo.layer()
        if case_id is None or (current is not None and layer_case_id(current) == case_id):
            self._style_ground_truth()
            return
        for layer in self.viewer.layers:
            if isinstance(layer, Labels) and layer_role(layer) == "ground_truth" \
                    and layer_case_id(layer) == case_id:
                self.gt_combo.select(layer)
                self._style_ground_truth()
                return
        if current is not None and layer_role(current) == "ground_truth":
            self.gt_combo.select(None)  # the previous case's ground truth

    def _style_ground_truth(self) -> None:
        """Draw the chosen ground truth as a contour, once (the user may change it after)."""
        gt = self.gt_combo.layer()
        if gt is not None and id(gt) not in self._styled and layer_role(gt) == "ground_truth":
            self._styled.add(id(gt))
            show_contour(gt)

    def _on_layer_inserted(self, event: Any) -> None:
        self.flair_combo.refresh()
        self.gt_combo.refresh()
        layer = event.value
        if self.running or is_result_layer(layer):
            return
        if isinstance(layer, Image) and self.flair_combo.layer() is None:
            self.flair_combo.select(layer)
        elif isinstance(layer, Labels) and self.gt_combo.layer() is None:
            self._match_ground_truth()

    def _on_flair_changed(self, _text: str) -> None:
        if not self.running:
            self._match_ground_truth()
            self._show_current()

    def _on_layer_removed(self, event: Any) -> None:
        removed = event.value
        owner = self.results.owner(removed)
        self.results.forget(removed)
        if owner is not None and owner is self.current and owner.errors is None:
            self._show_errors_checked(False)
        self.flair_combo.refresh()
        self.gt_combo.refresh()

    # ------------------------------------------------------------------ running
    def run(self, layer: Image | None = None, *, block: bool = False) -> Any:
        """Run the chosen model on a FLAIR image layer.

        Parameters
        ----------
        layer : napari.layers.Image, optional
            The FLAIR layer to analyse (chosen in the widget when given); default: the layer
            chosen in the widget.
        block : bool
            Wait (processing Qt events) until the run ends.

        Returns
        -------
        napari GeneratorWorker or None
            None when the inputs are invalid (the problem is shown in the widget).
            The result layers are then ``results_for(layer)``.
        """
        if self.running:
            self._fail("a run is already in progress")
            return None
        if layer is not None:
            if layer not in self.viewer.layers or not isinstance(layer, Image):
                self._fail(f"{getattr(layer, 'name', layer)!r} is not an image layer of this "
                           "viewer")
                return None
            self.flair_combo.select(layer)
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

        self._reset_scores()
        job = self.results.prepare(flair, opacity=self.opacity_slider.value() / 100)
        job.ground_truth = gt
        self._job = job
        orientation_points(self.viewer, flair)
        name_axes(self.viewer)
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
            precision=self.precision_combo.currentText(),
            mask_out=job.mask.data,
            errors_out=None if job.errors is None else job.errors.data,
        )
        return self._start_job(start, message=f"running {checkpoint.name} on {flair.name} …",
                               block=block)

    def _on_event(self, event: Any) -> None:
        job = self._job
        layer = None if job is None else job.anomaly
        z = int(event.z)
        if layer is not None:
            layer.data[z] = slice_to_display(np.asarray(event.slice_map))
            # Only the shown slice is redrawn (when it arrives): a refresh re-uploads a texture
            # and repaints the canvas, which costs more than computing a slice.
            if z == self._current_z():
                layer.refresh(extent=False, thumbnail=False, highlight=False)
        now = time.monotonic()
        if now - self._last_refresh > _REFRESH_EVERY_S or event.done == event.total:
            self.progress.setMaximum(int(event.total))
            self.progress.setValue(int(event.done))
            self._last_refresh = now

    def _on_returned(self, outcome: Outcome[Analysis]) -> None:
        job, self._job = self._job, None
        if outcome.error is not None:
            self._fail(outcome.error)
            return
        if outcome.cancelled:
            self.status.info(f"cancelled after {self.progress.value()} of "
                             f"{self.progress.maximum()} slices")
            return
        analysis = outcome.result
        assert analysis is not None and job is not None
        job.analysis = analysis
        if job.anomaly is not None:
            set_image_data(job.anomaly, analysis.anomaly)
            job.anomaly.contrast_limits = (0.0, 1.0)
        if job.mask is not None and job.mask.data is not analysis.cache.buffer:
            job.mask.data = analysis.cache.buffer
        self.lesion_panel.min_spin.blockSignals(True)  # the model's healthy-data default
        self.lesion_panel.min_spin.setValue(analysis.min_lesion_ml)
        self.lesion_panel.min_spin.blockSignals(False)
        if job is self.current:
            self._show_current()
        self.status.info(f"done: {analysis.case_id} with {analysis.checkpoint.name}")

    def _show_current(self) -> None:
        """Bring thresholds, scores, plots and lesions to the chosen FLAIR layer's results."""
        current = self.current
        analysis = None if current is None else current.analysis
        if analysis is None:
            self._reset_scores()
            self.progress.setValue(0)
            self.progress.setTextVisible(False)
            self._show_errors_checked(current is not None and current.errors is not None)
            flair = self.flair_combo.layer()
            if flair is not None:
                self.status.info(f"{flair.name}: not analysed yet (Run)")
            return
        self.progress.setTextVisible(True)
        self._show_errors_checked(current.errors is not None and analysis.cache.gt is not None)
        start, key = default_threshold(analysis.thresholds)
        if key != "fixed":  # offer the preset the run started at
            self.percentile_combo.blockSignals(True)
            self.percentile_combo.setCurrentIndex(self.percentile_combo.findData(key))
            self.percentile_combo.blockSignals(False)
        self._update_preset_buttons()
        self._update_explorer()
        threshold = current.threshold
        self._set_threshold(start if threshold is None else threshold, "run", force=True)
        self.flush()

    def _show_errors_checked(self, checked: bool) -> None:
        """Set the error box without (re)creating or removing the error layer."""
        self.errors_check.blockSignals(True)
        self.errors_check.setChecked(checked)
        self.errors_check.blockSignals(False)

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        for w in (self.flair_combo, self.gt_combo, self.model_combo, self.open_button,
                  self.device_combo, self.batch_spin, self.precision_combo):
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
        analysis = self.analysis
        return None if analysis is None else analysis.cache.metrics(self._threshold)

    @property
    def slice_metrics(self) -> dict[str, float] | None:
        """Scores of the current mask on the displayed axial slice (None without ground truth)."""
        return self._slice_metrics

    @property
    def lesions(self) -> Any:
        """The ``cavlog_core.lesions.LesionTable`` of the current mask (None before a run)."""
        self.flush()
        return self._lesions

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

        The full-volume error labels, the lesion table and the layer thumbnails are brought up
        to date once the threshold has stopped moving (:meth:`_settle`); until then the error
        overlay is updated on the displayed slice only.
        """
        current = self.current
        analysis = None if current is None else current.analysis
        if analysis is None:
            return
        state = current.apply_threshold(self._threshold, z=self._current_z())
        for layer in (current.mask, current.errors):
            if layer is not None:
                layer.refresh(extent=False, thumbnail=False, highlight=False)
        self._show_state(state)
        self.explorer.set_threshold(self._threshold, state.metrics)
        self._settle_timer.start()

    def _settle(self) -> None:
        """After the threshold settles: full error labels, lesions and thumbnails."""
        current = self.current
        analysis = None if current is None else current.analysis
        if analysis is None:
            return
        if current.errors is not None and analysis.cache.gt is not None:
            analysis.cache.errors()
            current.errors.refresh(extent=False)
        if current.mask is not None:
            current.mask.refresh(extent=False)
        self._update_lesions()

    def flush(self) -> None:
        """Apply any deferred update now (scripts and tests reading the layers)."""
        if self._settle_timer.isActive():
            self._settle_timer.stop()
            self._settle()

    def _update_lesions(self) -> None:
        analysis = self.analysis
        if analysis is None:
            self._lesions = None
            self.lesion_panel.clear()
            return
        self._lesions = lesion_table(analysis, self._threshold,
                                     min_volume_ml=self.lesion_panel.min_volume_ml)
        self.lesion_panel.show_table(self._lesions)

    def go_to_lesion(self, index: int) -> None:
        """Show lesion ``index`` of :attr:`lesions`: its central axial slice, centred."""
        current, table = self.current, self._lesions
        if current is None or table is None or not 0 <= index < len(table.lesions):
            return
        z, center = current.lesion_focus(table.lesions[index])
        self.viewer.dims.set_current_step(0, z)
        self.viewer.camera.center = center

    def _show_state(self, state: ThresholdState) -> None:
        for key in ("dice", "iou", "precision", "recall"):
            self.metric_labels[key].setText("–" if state.metrics is None
                                            else f"{state.metrics[key]:.3f}")
        self.metric_labels["positives"].setText(f"{state.volume_ml:.2f} mL "
                                                f"({state.positives:,} voxels)")
        self._show_slice_metrics(state.slice_metrics)

    def _reset_scores(self) -> None:
        for label in self.metric_labels.values():
            label.setText("–")
        self._slice_metrics = None
        self._lesions = None
        self.lesion_panel.clear()
        self.explorer.clear()
        self._update_preset_buttons()

    def _current_z(self) -> int:
        return int(self.viewer.dims.current_step[0]) if self.viewer.dims.ndim >= 3 else 0

    def _update_slice_metrics(self) -> None:
        current = self.current
        self._show_slice_metrics(None if current is None or current.analysis is None
                                 else current.slice_scores(self._current_z()))

    def _show_slice_metrics(self, scores: dict[str, float] | None) -> None:
        self._slice_metrics = scores
        self.metric_labels["slice_dice"].setText(
            "–" if scores is None else f"{scores['dice']:.3f} (z = {self._current_z()})")

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
    def _chosen_preset(self) -> Any:
        analysis = self.analysis
        key = self.percentile_combo.currentData()
        presets = healthy_presets(None if analysis is None else analysis.thresholds)
        return next(p for p in presets if p.key == key)

    def _update_preset_buttons(self, *_args: Any) -> None:
        preset = self._chosen_preset()
        self.healthy_button.setEnabled(preset.value is not None)
        self.healthy_button.setText("Healthy" + ("" if preset.value is None
                                                 else f": {preset.value:.3f}"))
        missing = (" (not in this checkpoint: fine-tune it to compute)"
                   if self.analysis is not None and preset.value is None else "")
        self.preset_note.setText(f"{preset.label}: {preset.note}{missing}")
        analysis = self.analysis
        # The oracle threshold is computed when first asked for (it costs a pass over the scan).
        self.gt_button.setEnabled(analysis is not None and analysis.cache.has_lesion)
        self.gt_button.setText("GT operating point (uses ground truth)")

    def _apply_healthy(self) -> None:
        value = self._chosen_preset().value
        if self.analysis is not None and value is not None:
            self.threshold = value

    def _apply_gt_point(self) -> None:
        if self.analysis is not None and self.analysis.gt_threshold is not None:
            self.threshold = self.analysis.gt_threshold

    def _on_gt_changed(self, _text: str) -> None:
        """New ground truth after a run: score the cached map against it (no new inference)."""
        current = self.current
        if current is None or current.analysis is None or self.running:
            return
        analysis = current.analysis
        gt = self.gt_combo.layer()
        if gt is current.ground_truth:  # e.g. the case was chosen again: nothing to rescore
            return
        if gt is not None and np.shape(gt.data) != analysis.anomaly.shape:
            self._fail(f"ground truth {gt.name!r} has shape {np.shape(gt.data)}, "
                       f"the map has {analysis.anomaly.shape}")
            gt = None
        self._style_ground_truth()
        if gt is None:
            self.errors_check.setChecked(False)
        current.analysis = analysis.with_ground_truth(None if gt is None else gt.data)
        current.ground_truth = gt
        self._update_preset_buttons()
        self._update_explorer()
        kept = self._threshold if current.threshold is None else current.threshold
        self._set_threshold(kept, "gt", force=True)

    # ------------------------------------------------------------------ overlay controls
    def _on_opacity(self, value: int) -> None:
        layer = self.anomaly_layer
        if layer is not None:
            layer.opacity = value / 100

    def _on_errors_toggled(self, checked: bool) -> None:
        current = self.current
        analysis = None if current is None else current.analysis
        if not checked:
            if current is not None and current.errors is not None:
                errors = current.errors
                current.errors = None
                if errors in self.viewer.layers:
                    self.viewer.layers.remove(errors)
            return
        if analysis is None or analysis.cache.gt is None:
            self.status.error("errors need a finished run with a ground-truth layer")
            self._show_errors_checked(False)
            return
        self.results.add_errors(current, analysis.cache.errors())


def _entry_label(entry: ModelEntry) -> str:
    prefix = {"finetuned": "Fine-tuned: ", "file": "File: "}.get(entry.origin, "")
    return prefix + entry.label


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
