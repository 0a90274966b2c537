"""The control groups of the anomaly widget: model, threshold, overlay and scores (view only).

Each panel builds its Qt controls and shows what it is given; none decides anything. The widget
(:mod:`napari_cavlog._qt.anomaly`) wires them to :class:`napari_cavlog._controller.
AnalysisController`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt, Signal
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

from cavlog_core.config import InferenceConfig

from .._controller import PresetView, RunSettings
from .._models import model_menu, session_models
from .._presets import healthy_presets
from .._results import ThresholdState
from .common import device_combo, model_combo, precision_combo, refill_combo, set_silently

__all__ = ["SLIDER_STEPS", "ModelPanel", "OverlayPanel", "ScoresPanel", "ThresholdPanel"]

SLIDER_STEPS = 1000  # threshold resolution 0.001

_METRICS = (("dice", "DICE (scan)"), ("iou", "IoU"), ("precision", "Precision"),
            ("recall", "Recall"), ("slice_dice", "DICE (this slice)"), ("positives", "Mask"))


class ModelPanel(QGroupBox):
    """The model menu (demo weights, this session's models, Open…), device, batch, precision."""

    def __init__(self) -> None:
        super().__init__("Model")
        form = QFormLayout(self)
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
        self.batch_spin.setValue(InferenceConfig().batch_size)
        form.addRow("Batch size", self.batch_spin)
        self.precision_combo = precision_combo()
        form.addRow("Precision", self.precision_combo)
        self.refresh()

    def refresh(self) -> None:
        """Refill the model menu (the session's models changed)."""
        refill_combo(self.model_combo, model_menu())

    def _pick_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a cavlog checkpoint", "",
                                              "Checkpoints (*.pt *.pth);;All files (*)")
        if path:
            self.set_checkpoint(path)

    def set_checkpoint(self, path: str | Path, *, label: str | None = None) -> None:
        """Add checkpoint ``path`` to the session's models and select it."""
        entry = session_models.add(path, label=label, origin="file")
        self.refresh()
        self.model_combo.setCurrentIndex(self.model_combo.findData(str(entry.path)))

    def settings(self) -> RunSettings:
        """The chosen checkpoint (None: demo weights not installed), device, batch, precision."""
        data = self.model_combo.currentData()
        return RunSettings(None if data is None else Path(data), self.device_combo.currentText(),
                           self.batch_spin.value(), self.precision_combo.currentText())

    def inputs(self) -> tuple[QWidget, ...]:
        """The controls disabled while a run is in progress."""
        return (self.model_combo, self.open_button, self.device_combo, self.batch_spin,
                self.precision_combo)


class ThresholdPanel(QGroupBox):
    """Threshold slider and spin box, the fixed / healthy / ground-truth presets.

    Signals
    -------
    threshold_edited(float, str)
        The user moved the slider (``"slider"``) or the spin box (``"spin"``).
    """

    threshold_edited = Signal(float, str)

    def __init__(self, threshold: float) -> None:
        super().__init__("Threshold")
        grid = QGridLayout(self)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setValue(round(threshold * SLIDER_STEPS))
        self.slider.valueChanged.connect(
            lambda v: self.threshold_edited.emit(v / SLIDER_STEPS, "slider"))
        self.spin = QDoubleSpinBox()
        self.spin.setRange(0.0, 1.0)
        self.spin.setDecimals(3)
        self.spin.setSingleStep(0.001)
        self.spin.setValue(threshold)
        self.spin.valueChanged.connect(lambda v: self.threshold_edited.emit(v, "spin"))
        grid.addWidget(self.slider, 0, 0, 1, 3)
        grid.addWidget(self.spin, 0, 3)
        self._build_presets(grid)

    def _build_presets(self, grid: QGridLayout) -> None:
        self.fixed_button = QPushButton("0.5")
        self.fixed_button.setToolTip("the paper's fixed threshold on the normalised map")
        self.healthy_button = QPushButton("Healthy")
        self.healthy_button.setToolTip("a threshold set on healthy validation slices (checkpoint)")
        self.percentile_combo = QComboBox()
        for preset in healthy_presets(None):
            self.percentile_combo.addItem(preset.label, preset.key)
        self.percentile_combo.setCurrentIndex(self.percentile_combo.findData("healthy_fpr5"))
        self.preset_note = QLabel("")
        self.preset_note.setWordWrap(True)
        self.preset_note.setStyleSheet("color: #9aa0a6;")
        self.gt_button = QPushButton("GT operating point (uses ground truth)")
        self.gt_button.setToolTip("F1-best threshold on this scan: an oracle (uses the GT)")
        grid.addWidget(self.fixed_button, 1, 0)
        grid.addWidget(self.healthy_button, 1, 1, 1, 2)
        grid.addWidget(self.percentile_combo, 1, 3)
        grid.addWidget(self.preset_note, 2, 0, 1, 4)
        grid.addWidget(self.gt_button, 3, 0, 1, 4)

    @property
    def preset_key(self) -> str:
        """The healthy preset chosen in the menu (``"healthy_fpr5"`` ...)."""
        return str(self.percentile_combo.currentData())

    def show_threshold(self, value: float, *, source: str) -> None:
        """Show ``value`` on the slider and spin box, except on the one it came from."""
        if source != "slider":
            set_silently(self.slider, round(value * SLIDER_STEPS))
        if source != "spin":
            set_silently(self.spin, value)

    def offer_preset(self, key: str) -> None:
        """Choose preset ``key`` in the menu, silently."""
        set_silently(self.percentile_combo, self.percentile_combo.findData(key))

    def show_presets(self, view: PresetView) -> None:
        self.healthy_button.setEnabled(view.healthy_value is not None)
        self.healthy_button.setText(view.healthy_text)
        self.preset_note.setText(view.note)
        self.gt_button.setEnabled(view.gt_enabled)


class OverlayPanel(QGroupBox):
    """Map opacity and the error-overlay box."""

    def __init__(self) -> None:
        super().__init__("Overlay")
        form = QFormLayout(self)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(80)
        form.addRow("Map opacity", self.opacity_slider)
        self.errors_check = QCheckBox("Show errors (FP magenta, FN green)")
        form.addRow(self.errors_check)

    @property
    def opacity(self) -> float:
        return self.opacity_slider.value() / 100


class ScoresPanel(QGroupBox):
    """Scores against the ground truth over the scan and on the shown slice, mask volume."""

    def __init__(self) -> None:
        super().__init__("Comparison with ground truth (at the scan's voxels)")
        form = QFormLayout(self)
        self.labels: dict[str, QLabel] = {}
        for key, text in _METRICS:
            self.labels[key] = QLabel("–")
            form.addRow(text, self.labels[key])

    def clear(self) -> None:
        for label in self.labels.values():
            label.setText("–")

    def show_state(self, state: ThresholdState, *, z: int) -> None:
        """The scores and mask volume of one threshold (``z``: the shown slice)."""
        for key in ("dice", "iou", "precision", "recall"):
            self.labels[key].setText("–" if state.metrics is None else f"{state.metrics[key]:.3f}")
        self.labels["positives"].setText(f"{state.volume_ml:.2f} mL ({state.positives:,} voxels)")
        self.show_slice(state.slice_metrics, z=z)

    def show_slice(self, scores: dict[str, Any] | None, *, z: int) -> None:
        self.labels["slice_dice"].setText("–" if scores is None
                                          else f"{scores['dice']:.3f} (z = {z})")
