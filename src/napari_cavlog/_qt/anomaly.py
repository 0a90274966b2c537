"""The "Anomaly segmentation" dock widget: run a model on a FLAIR layer and explore thresholds.

Only the view: it builds and reads the Qt controls, asks
:class:`napari_cavlog._controller.AnalysisController` (the Qt-free analysis state: layer roles,
results per FLAIR layer, presets, threshold cache) what to do, and writes the answers into its
controls and layers. The run is :func:`napari_cavlog._jobs.analysis_job` (which calls
``cavlog_core.inference.predict.predict_volume``) in a napari ``thread_worker``. Results belong
to the image they were computed from: each FLAIR layer gets its own map, mask and error layers
right above it, and choosing a FLAIR layer shows its own results again.
"""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Any

from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QFormLayout, QGroupBox, QWidget

from cavlog_core.lesions import DEFAULT_MIN_LESION_ML

from .._controller import AnalysisController
from .._jobs import Analysis, analysis_job
from .._models import session_models
from .._overlay import name_axes, orientation_points, show_contour
from .._reader import prefer_this_reader
from .._results import CaseResults, is_result_layer
from .._runner import Outcome
from .common import (
    JobHost,
    LayerCombo,
    connect_while_alive,
    fit_scroll_width,
    job_controls,
    scrolling_layout,
    set_silently,
    single_shot_timer,
)
from .lesions import LesionPanel
from .panels import ModelPanel, OverlayPanel, ScoresPanel, ThresholdPanel
from .plots import ThresholdExplorer

__all__ = ["AnomalyWidget"]

_REFRESH_EVERY_S = 0.2  # progress-bar update rate while slices stream in
_SETTLE_MS = 150  # full error labels, lesions and thumbnails once the threshold stops moving
_LIGHT = {"extent": False, "thumbnail": False, "highlight": False}  # redraw the slice only


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
    the FLAIR layer chosen in the widget; :attr:`control` is the Qt-free analysis state.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        prefer_this_reader()  # BraTS folders and NIfTI files open without a reader dialog
        self.control = AnalysisController(napari_viewer, chosen=self._chosen_flair)
        self.results = self.control.results
        self._worker: Any = None
        self._cancel = threading.Event()
        self._last_refresh = 0.0
        self._settle_timer = single_shot_timer(self, _SETTLE_MS, self._settle)
        self._build_ui()
        fit_scroll_width(self)
        self._connect_viewer()
        self._select_default_layers()

    def _connect_viewer(self) -> None:
        listener = self._models_listener = self._refresh_models_safe
        session_models.subscribe(listener)
        self.destroyed.connect(lambda *_args: session_models.unsubscribe(listener))
        connect_while_alive(self, (
            (self.viewer.layers.events.inserted, self._on_layer_inserted),
            (self.viewer.layers.events.removed, self._on_layer_removed),
            (self.viewer.dims.events.current_step, self._on_step),
        ))

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        root = scrolling_layout(self)
        root.addWidget(self._build_inputs())
        self.model_panel = ModelPanel()
        root.addWidget(self.model_panel)
        self.run_button, self.cancel_button, self.progress, self.status = job_controls(
            root, start_label="Run", unit="slices", on_start=self.run, on_cancel=self.cancel)
        self.threshold_panel = ThresholdPanel(self.threshold)
        self.overlay_panel = OverlayPanel()
        self.lesion_panel = LesionPanel(min_volume_ml=DEFAULT_MIN_LESION_ML)
        self.scores_panel = ScoresPanel()
        self.explorer = ThresholdExplorer()
        for panel in (self.threshold_panel, self.overlay_panel, self.lesion_panel,
                      self.scores_panel, self.explorer):
            root.addWidget(panel)
        root.addStretch(1)
        self._name_controls()
        self._connect_controls()
        self._update_preset_buttons()

    def _build_inputs(self) -> QGroupBox:
        box = QGroupBox("Input")
        form = QFormLayout(box)
        self.flair_combo = LayerCombo(self.viewer, Image, exclude=is_result_layer)
        self.flair_combo.setToolTip("the FLAIR scan to analyse; its results are drawn above it")
        self.gt_combo = LayerCombo(self.viewer, Labels, optional=True, exclude=is_result_layer)
        self.gt_combo.setToolTip("optional ground-truth labels (lesion = label > 0)")
        form.addRow("FLAIR", self.flair_combo)
        form.addRow("Ground truth", self.gt_combo)
        return box

    def _name_controls(self) -> None:
        """The panels' controls as attributes of the widget (scripts and tests use them)."""
        m, t, o = self.model_panel, self.threshold_panel, self.overlay_panel
        self.model_combo, self.open_button, self.device_combo = (m.model_combo, m.open_button,
                                                                 m.device_combo)
        self.batch_spin, self.precision_combo = m.batch_spin, m.precision_combo
        self.slider, self.spin, self.fixed_button = t.slider, t.spin, t.fixed_button
        self.healthy_button, self.percentile_combo = t.healthy_button, t.percentile_combo
        self.preset_note, self.gt_button = t.preset_note, t.gt_button
        self.opacity_slider, self.errors_check = o.opacity_slider, o.errors_check
        self.metric_labels = self.scores_panel.labels

    def _connect_controls(self) -> None:
        t = self.threshold_panel
        self.gt_combo.currentTextChanged.connect(self._on_gt_changed)
        self.flair_combo.currentTextChanged.connect(self._on_flair_changed)
        t.threshold_edited.connect(self._set_threshold)
        t.fixed_button.clicked.connect(lambda: setattr(self, "threshold", 0.5))
        t.healthy_button.clicked.connect(self._apply_healthy)
        t.percentile_combo.currentIndexChanged.connect(self._update_preset_buttons)
        t.gt_button.clicked.connect(self._apply_gt_point)
        self.opacity_slider.valueChanged.connect(self._on_opacity)
        self.errors_check.toggled.connect(self._on_errors_toggled)
        self.lesion_panel.min_volume_changed.connect(lambda _v: self._update_lesions())
        self.lesion_panel.lesion_chosen.connect(self.go_to_lesion)

    # ------------------------------------------------------------------ models
    def _refresh_models(self) -> None:
        self.model_panel.refresh()

    def set_checkpoint(self, path: str | Path, *, label: str | None = None) -> None:
        """Add checkpoint ``path`` to the session's models and select it."""
        self.model_panel.set_checkpoint(path, label=label)

    # ------------------------------------------------------------------ results of a layer
    def _chosen_flair(self) -> Any:
        combo = getattr(self, "flair_combo", None)  # None while the controls are being built
        return None if combo is None else combo.layer()

    def results_for(self, layer: Any) -> CaseResults | None:
        """The results computed from the FLAIR layer ``layer`` (None when never run)."""
        return self.results.get(layer)

    @property
    def current(self) -> CaseResults | None:
        """The results of the FLAIR layer chosen in the widget."""
        return self.control.current

    @property
    def analysis(self) -> Analysis | None:
        """The finished analysis of the chosen FLAIR layer (None before a run)."""
        return self.control.analysis

    @property
    def anomaly_layer(self) -> Image | None:
        return None if self.current is None else self.current.anomaly

    @property
    def mask_layer(self) -> Labels | None:
        return None if self.current is None else self.current.mask

    @property
    def error_layer(self) -> Labels | None:
        return None if self.current is None else self.current.errors

    # ------------------------------------------------------------------ layers
    def _refresh_combos(self) -> None:
        self.flair_combo.refresh()
        self.gt_combo.refresh()

    def _select_default_layers(self) -> None:
        """Initial choice: the newest FLAIR-like image and the ground truth of the same case."""
        self._refresh_combos()
        choice = self.control.default_flair(self.flair_combo.layer())
        if choice.change:
            self.flair_combo.select(choice.layer)
        self._match_ground_truth()

    def _match_ground_truth(self) -> None:
        """Select the ground-truth layer of the chosen FLAIR's case, when the reader made one."""
        choice = self.control.match_ground_truth(self.flair_combo.layer(), self.gt_combo.layer())
        if choice.change:
            self.gt_combo.select(choice.layer)
        self._style_ground_truth()

    def _style_ground_truth(self) -> None:
        """Draw the chosen ground truth as a contour, once (the user may change it after)."""
        gt = self.gt_combo.layer()
        if self.control.claim_contour(gt):
            show_contour(gt)

    def _on_layer_inserted(self, event: Any) -> None:
        self._refresh_combos()
        action = self.control.inserted(event.value, self.flair_combo.layer(),
                                       self.gt_combo.layer(), running=self.running)
        if action == "flair":
            self.flair_combo.select(event.value)
        elif action == "ground_truth":
            self._match_ground_truth()

    def _on_flair_changed(self, _text: str) -> None:
        if not self.running:
            self._match_ground_truth()
            self._show_current()

    def _on_layer_removed(self, event: Any) -> None:
        if self.control.removed(event.value):
            self._show_errors_checked(False)
        self._refresh_combos()

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
        problem = "a run is already in progress" if self.running else None
        if problem is None and layer is not None:
            problem = self.control.layer_problem(layer)
            if problem is None:
                self.flair_combo.select(layer)
        flair, gt = self.flair_combo.layer(), self.gt_combo.layer()
        settings = self.model_panel.settings()
        problem = problem or self.control.run_problem(flair, gt, settings.checkpoint)
        if problem is not None:
            self._fail(problem)
            return None
        self._reset_scores()
        plan = self.control.prepare_run(flair, gt, settings, opacity=self.overlay_panel.opacity)
        orientation_points(self.viewer, flair)
        name_axes(self.viewer)
        start = functools.partial(analysis_job, **plan.kwargs)
        return self._start_job(start, message=plan.message, block=block)

    def _on_event(self, event: Any) -> None:
        layer = self.control.stream(event, shown_z=self._current_z())
        if layer is not None:
            # Only the shown slice is redrawn (when it arrives): a refresh re-uploads a texture
            # and repaints the canvas, which costs more than computing a slice.
            layer.refresh(**_LIGHT)
        now = time.monotonic()
        if now - self._last_refresh > _REFRESH_EVERY_S or event.done == event.total:
            self.progress.setMaximum(int(event.total))
            self.progress.setValue(int(event.done))
            self._last_refresh = now

    def _on_returned(self, outcome: Outcome[Analysis]) -> None:
        done = self.control.finish(outcome)
        if done.error is not None:
            self._fail(done.error)
            return
        if done.cancelled or done.analysis is None:
            self.status.info(f"cancelled after {self.progress.value()} of "
                             f"{self.progress.maximum()} slices")
            return
        # The model's smallest lesion on healthy data (set silently: no table yet).
        set_silently(self.lesion_panel.min_spin, done.analysis.min_lesion_ml)
        if done.job is self.current:
            self._show_current()
        self.status.info(done.message)

    def _show_current(self) -> None:
        """Bring thresholds, scores, plots and lesions to the chosen FLAIR layer's results."""
        view = self.control.view()
        if not view.analysed:
            self._reset_scores()
            self.progress.setValue(0)
            self.progress.setTextVisible(False)
            self._show_errors_checked(view.show_errors)
            if view.message is not None:
                self.status.info(view.message)
            return
        self.progress.setTextVisible(True)
        self._show_errors_checked(view.show_errors)
        if view.preset_key is not None:  # offer the preset the run started at
            self.threshold_panel.offer_preset(view.preset_key)
        self._update_preset_buttons()
        self._update_explorer()
        assert view.threshold is not None
        self._set_threshold(view.threshold, "run", force=True)
        self.flush()

    def _show_errors_checked(self, checked: bool) -> None:
        """Set the error box without (re)creating or removing the error layer."""
        set_silently(self.errors_check, checked)

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        for w in (self.flair_combo, self.gt_combo, *self.model_panel.inputs()):
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
        return self.control.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._set_threshold(float(value), "api")

    @property
    def metrics(self) -> dict[str, float] | None:
        """``dice``, ``iou``, ``precision``, ``recall`` of the current mask (None without GT)."""
        return self.control.metrics

    @property
    def slice_metrics(self) -> dict[str, float] | None:
        """Scores of the current mask on the displayed axial slice (None without ground truth)."""
        return self.control.slice_metrics

    @property
    def lesions(self) -> Any:
        """The ``cavlog_core.lesions.LesionTable`` of the current mask (None before a run)."""
        self.flush()
        return self.control.lesions

    def _set_threshold(self, value: float, source: str, *, force: bool = False) -> None:
        new = self.control.set_threshold(value, force=force)
        if new is None:
            return
        self.threshold_panel.show_threshold(new, source=source)
        self._apply_threshold()

    def _apply_threshold(self) -> None:
        """The slider callback path: mask + scores from the cache, then light layer refreshes.

        The full-volume error labels, the lesion table and the layer thumbnails are brought up
        to date once the threshold has stopped moving (:meth:`_settle`); until then the error
        overlay is updated on the displayed slice only.
        """
        redraw = self.control.apply_threshold(self._current_z())
        if redraw is None:
            return
        for layer in redraw.layers:
            layer.refresh(**_LIGHT)
        self.scores_panel.show_state(redraw.state, z=self._current_z())
        self.explorer.set_threshold(self.threshold, redraw.state.metrics)
        self._settle_timer.start()

    def _settle(self) -> None:
        """After the threshold settles: full error labels, lesions and thumbnails."""
        settled = self.control.settle(min_volume_ml=self.lesion_panel.min_volume_ml)
        if settled is None:
            return
        for layer in settled.layers:
            layer.refresh(extent=False)
        self.lesion_panel.show_table(settled.lesions)

    def flush(self) -> None:
        """Apply any deferred update now (scripts and tests reading the layers)."""
        if self._settle_timer.isActive():
            self._settle_timer.stop()
            self._settle()

    def _update_lesions(self) -> None:
        self.lesion_panel.show_table(self.control.update_lesions(
            min_volume_ml=self.lesion_panel.min_volume_ml))

    def go_to_lesion(self, index: int) -> None:
        """Show lesion ``index`` of :attr:`lesions`: its central axial slice, centred."""
        focus = self.control.lesion_focus(index)
        if focus is not None:
            z, center = focus
            self.viewer.dims.set_current_step(0, z)
            self.viewer.camera.center = center

    def _reset_scores(self) -> None:
        self.scores_panel.clear()
        self.control.reset_scores()
        self.lesion_panel.clear()
        self.explorer.clear()
        self._update_preset_buttons()

    def _current_z(self) -> int:
        return int(self.viewer.dims.current_step[0]) if self.viewer.dims.ndim >= 3 else 0

    def _on_step(self, event: Any = None) -> None:
        if self.analysis is not None:
            self.flush()  # the error labels of the new slice must be current
            z = self._current_z()
            self.scores_panel.show_slice(self.control.slice_scores(z), z=z)

    def _update_explorer(self) -> None:
        self.explorer.show_data(self.control.explorer())

    # ------------------------------------------------------------------ presets
    def _update_preset_buttons(self, *_args: Any) -> None:
        self.threshold_panel.show_presets(
            self.control.preset_view(self.threshold_panel.preset_key))

    def _apply_healthy(self) -> None:
        value = self.control.healthy_threshold(self.threshold_panel.preset_key)
        if value is not None:
            self.threshold = value

    def _apply_gt_point(self) -> None:
        value = self.control.gt_threshold()
        if value is not None:
            self.threshold = value

    def _on_gt_changed(self, _text: str) -> None:
        """New ground truth after a run: score the cached map against it (no new inference)."""
        change = self.control.change_ground_truth(self.gt_combo.layer(), running=self.running)
        if change is None:
            return
        if change.error is not None:
            self._fail(change.error)
        self._style_ground_truth()
        if change.errors_off:
            self.errors_check.setChecked(False)
        self._update_preset_buttons()
        self._update_explorer()
        self._set_threshold(change.threshold, "gt", force=True)

    # ------------------------------------------------------------------ overlay controls
    def _on_opacity(self, value: int) -> None:
        layer = self.anomaly_layer
        if layer is not None:
            layer.opacity = value / 100

    def _on_errors_toggled(self, checked: bool) -> None:
        problem = self.control.show_errors(checked)
        if problem is not None:
            self.status.error(problem)
            self._show_errors_checked(False)
