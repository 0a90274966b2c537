"""The "Fine-tune on healthy scans" dock widget.

Reads its inputs, checks the cheap ones at once, and runs
:func:`napari_cavlog._jobs.finetune_job` (``cavlog_core.training.fit``) in a napari
``thread_worker``; the finished model is added to :data:`napari_cavlog._models.session_models`,
where every anomaly widget of the session lists it.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from .._jobs import FineTuneSettings, finetune_job, finetune_problem
from .._models import demo_checkpoint_path, session_models
from .._reader import prefer_this_reader
from .._runner import Outcome
from .common import (
    JobHost,
    device_combo,
    fit_scroll_width,
    job_controls,
    model_combo,
    precision_combo,
    refill_combo,
    scrolling_layout,
)
from .plots import LossPlot

__all__ = ["FineTuneWidget"]

SCRATCH = "(none: train from scratch)"


class FineTuneWidget(JobHost, QWidget):
    """Fine-tune a model (or train one) on a folder of healthy scans.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Notes
    -----
    The folder may hold healthy scans, or BraTS cases with ground truth (only their lesion-free
    slices are used). Scriptable: set the fields (``folder_edit``, ``output_edit``,
    ``iterations_spin`` ...), call :meth:`start` (``block=True`` waits) or :meth:`cancel`;
    :attr:`result` holds the last ``FitResult``.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        prefer_this_reader()  # BraTS folders and NIfTI files open without a reader dialog
        self.result: Any = None
        self.last_error: str | None = None
        self._worker: Any = None
        self._cancel = threading.Event()
        self._build_ui()
        fit_scroll_width(self)
        self._refresh_models()
        self._models_listener = self._refresh_models_safe
        session_models.subscribe(self._models_listener)
        self.destroyed.connect(functools.partial(session_models.unsubscribe, self._models_listener))

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        from cavlog_core.config import TrainConfig

        d = FineTuneSettings()  # the single source of the defaults shown here
        self._scratch = (str(d.resolution), d.width, TrainConfig().iterations)
        self._finetune_iterations = d.iterations
        root = scrolling_layout(self)

        data = QGroupBox("Data")
        form = QFormLayout(data)
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("folder of healthy scans, or a BraTS folder")
        form.addRow("Scans", _with_browse(self.folder_edit, self._browse_folder))
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("new folder for the run (checkpoint.pt, log.jsonl)")
        form.addRow("Output", _with_browse(self.output_edit, self._browse_output))
        root.addWidget(data)

        params = QGroupBox("Training")
        form = QFormLayout(params)
        self.model_combo = model_combo()
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        form.addRow("Start from", self.model_combo)
        self.iterations_spin = QSpinBox()
        self.iterations_spin.setRange(1, 1_000_000)
        self.iterations_spin.setValue(d.iterations)
        self.iterations_spin.setToolTip("batches to train; the status line shows the time left")
        form.addRow("Iterations", self.iterations_spin)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 4096)
        self.batch_spin.setValue(d.batch_size)
        form.addRow("Batch size", self.batch_spin)
        self.lr_spin = _float_spin(d.lr, 1e-7, 1.0, decimals=7, step=1e-5)
        form.addRow("Learning rate", self.lr_spin)
        self.lam_spin = _float_spin(d.lam, 0.0, 1e4, decimals=3, step=1.0)
        form.addRow("λ (constraint weight)", self.lam_spin)
        self.p_spin = _float_spin(d.p, 0.0, 0.999, decimals=3, step=0.05)
        self.p_spin.setToolTip("target attention size: f_c = (1 - mean attention) - p <= 0")
        form.addRow("p (attention size)", self.p_spin)
        self.t_spin = _float_spin(d.t, 0.01, 1e4, decimals=2, step=1.0)
        self.t_spin.setToolTip("extended log-barrier parameter t")
        form.addRow("t (log-barrier)", self.t_spin)
        self.resolution_combo = QComboBox()
        self.resolution_combo.addItems(["64", "128", "224"])
        self.resolution_combo.setCurrentText(str(d.resolution))
        self.resolution_combo.setToolTip("from scratch only: a starting model fixes it")
        form.addRow("Resolution", self.resolution_combo)
        self.width_spin = _float_spin(d.width, 0.0625, 4.0, decimals=4, step=0.125)
        self.width_spin.setToolTip("channel multiplier of the ResNet-18 VAE (from scratch only)")
        form.addRow("Width", self.width_spin)
        self.device_combo = device_combo()
        form.addRow("Device", self.device_combo)
        self.precision_combo = precision_combo()
        self.precision_combo.setToolTip(self.precision_combo.toolTip().replace(
            "the map correlates >= 0.99 with fp32", "about 1.5x faster on such CPUs"))
        form.addRow("Precision", self.precision_combo)
        root.addWidget(params)

        self.start_button, self.cancel_button, self.progress, self.status = job_controls(
            root, start_label="Start", unit="iterations", on_start=self.start,
            on_cancel=self.cancel)
        self.plot = LossPlot()
        root.addWidget(self.plot)
        root.addStretch(1)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of healthy scans")
        if path:
            self.folder_edit.setText(path)

    def _browse_output(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder")
        if path:
            self.output_edit.setText(path)

    # ------------------------------------------------------------------ models
    def _refresh_models(self) -> None:
        demo = demo_checkpoint_path()
        items = [("Demo model (synthetic data)", str(demo))] if demo.is_file() else []
        items += [(e.label, str(e.path)) for e in session_models.entries()]
        refill_combo(self.model_combo, [*items, (SCRATCH, None)])
        self._on_model_changed()

    def set_start_checkpoint(self, path: str | Path | None) -> None:
        """Start from checkpoint ``path`` (added to the session's models), or scratch (None)."""
        if path is None:
            self.model_combo.setCurrentText(SCRATCH)
            return
        entry = session_models.add(path, origin="file")
        self._refresh_models()
        self.model_combo.setCurrentIndex(self.model_combo.findData(str(entry.path)))

    def _start_checkpoint(self) -> Path | None:
        data = self.model_combo.currentData()
        return None if data is None else Path(data)

    def _on_model_changed(self, _index: int = 0) -> None:
        """Show the starting model's resolution and width (fixed by its weights), greyed out."""
        start = self._start_checkpoint()
        scratch = start is None
        self.resolution_combo.setEnabled(scratch)
        self.width_spin.setEnabled(scratch)
        if scratch:
            resolution, width, iterations = self._scratch
        else:
            shape = _model_shape(start)
            if shape is None:  # unreadable: start() reports it in one line
                return
            resolution, width = str(shape[0]), shape[1]
            iterations = self._finetune_iterations
        if self.resolution_combo.findText(resolution) < 0:
            self.resolution_combo.addItem(resolution)
        self.resolution_combo.setCurrentText(resolution)
        self.width_spin.setValue(width)
        if not self.running:
            self.iterations_spin.setValue(iterations)

    # ------------------------------------------------------------------ running
    def start(self, block: bool = False) -> Any:
        """Check the inputs and start training; returns the worker, or None if an input is bad."""
        if self.running:
            self._flag("training is already running")
            return None
        folder, out = self.folder_edit.text(), self.output_edit.text()
        start = self._start_checkpoint()
        problem = finetune_problem(folder, out, start)
        if problem is not None:
            self._flag(problem)
            return None
        self.result = None
        self.last_error = None
        settings = FineTuneSettings(
            iterations=self.iterations_spin.value(), lr=self.lr_spin.value(),
            lam=self.lam_spin.value(), p=self.p_spin.value(), t=self.t_spin.value(),
            batch_size=self.batch_spin.value(), device=self.device_combo.currentText(),
            resolution=int(self.resolution_combo.currentText()), width=self.width_spin.value(),
            precision=self.precision_combo.currentText())
        job = functools.partial(finetune_job, data_dir=folder, out_dir=out, start=start,
                                settings=settings)
        self.plot.reset()
        self.progress.setRange(0, self.iterations_spin.value())
        self.progress.setValue(0)
        return self._start_job(job, message="preparing the lesion-free slices …", block=block)

    def _on_event(self, event: Any) -> None:
        phase = getattr(event, "phase", "")
        total = int(getattr(event, "total_iterations", 0) or 0)
        if phase in ("warmup", "constrained"):
            if total:
                self.progress.setRange(0, total)
            self.progress.setValue(int(event.iteration))
            if "loss" not in event.losses:  # on a GPU only every log_every-th event has them
                return
            self.plot.append(event.iteration, event.losses["loss"], event.mean_fc)
            self.status.info(f"{phase}: iteration {event.iteration}/{total}, "
                             f"loss {event.losses['loss']:.4g}, "
                             f"mean f_c {event.mean_fc:.3f}, {event.images_per_s:.1f} images/s, "
                             f"{_duration(getattr(event, 'seconds_left', float('nan')))} left")
        elif phase == "validate":
            self.status.info("computing healthy thresholds …")
        elif phase == "prepare":
            done = next((v for k, v in event.losses.items() if k.endswith("_cases_done")), 0)
            of = next((v for k, v in event.losses.items() if k.endswith("_cases_total")), 0)
            self.status.info(f"preparing lesion-free slices: {done:g}/{of:g} scan(s)")

    def _on_returned(self, outcome: Outcome[Any]) -> None:
        out_dir = Path(self.output_edit.text()).expanduser()
        if outcome.error is not None:
            self._flag(outcome.error)
            return
        if outcome.cancelled:
            ckpt = out_dir / "checkpoint.pt"
            if ckpt.is_file():
                session_models.add(ckpt, label=f"{out_dir.name} (cancelled)", origin="finetuned")
                self.status.info(f"cancelled; the last checkpoint {ckpt} is in the model list "
                                 "and can be resumed (cavlog finetune ... --resume)")
            else:
                self.status.info("cancelled before the first checkpoint was written")
            return
        result = outcome.result
        self.result = result
        entry = session_models.add(result.checkpoint_path, label=out_dir.name, origin="finetuned")
        share = result.healthy_fc_satisfied
        share_text = "" if share is None else f", f_c <= 0 on {100 * share:.0f} % of healthy slices"
        self.status.info(f"done: {result.checkpoint_path} ({result.iterations} iterations"
                         f"{share_text}); select '{entry.label}' in Anomaly segmentation")
        show_info(f"Fine-tuned model ready: {result.checkpoint_path}")

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _flag(self, message: str) -> None:
        self.last_error = message
        self.status.error(message)
        show_error(f"Fine-tune: {message}")


@functools.lru_cache(maxsize=32)
def _model_shape_cached(path: str, mtime: float) -> tuple[int, float] | None:
    from cavlog_core.checkpoint import config_from_payload, read_checkpoint
    from cavlog_core.errors import CavlogError

    try:
        config = config_from_payload(path, read_checkpoint(path))
    except (CavlogError, OSError):
        return None
    return config.model.resolution, config.model.width


def _model_shape(path: Path) -> tuple[int, float] | None:
    """``(resolution, width)`` of a checkpoint's model, or None when it cannot be read."""
    try:
        return _model_shape_cached(str(path), path.stat().st_mtime)
    except OSError:
        return None


def _duration(seconds: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"2.5 h"``; ``"?"`` before the rate is known."""
    if not seconds == seconds or seconds < 0:  # NaN
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _float_spin(
    value: float, lo: float, hi: float, *, decimals: int, step: float
) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setDecimals(decimals)
    spin.setRange(lo, hi)
    spin.setSingleStep(step)
    spin.setValue(value)
    return spin


def _with_browse(edit: QLineEdit, callback: Any) -> QWidget:
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    button = QPushButton("…")
    button.setMaximumWidth(32)
    button.clicked.connect(callback)
    row.addWidget(button)
    return box
