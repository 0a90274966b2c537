"""Qt pieces shared by the two widgets: layer pickers, device menu, status line, blocking wait."""

from __future__ import annotations

import threading
import time
from typing import Any, NamedTuple

from napari.qt.threading import create_worker
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

__all__ = [
    "JobControls", "JobHost", "LayerCombo", "StatusLabel", "connect_while_alive", "device_combo",
    "fit_scroll_width", "job_controls", "model_combo", "precision_combo", "refill_combo",
    "scrolling_layout", "set_silently", "single_shot_timer", "wait_until",
]

NONE_ITEM = "(none)"


class LayerCombo(QComboBox):
    """A menu of the viewer's layers of one kind, refreshed when layers change or it opens.

    Parameters
    ----------
    viewer : napari.Viewer
    kind : type
        ``napari.layers.Image`` or ``napari.layers.Labels``.
    optional : bool
        Adds a first ``(none)`` entry.
    exclude : callable, optional
        ``exclude(layer)`` true for layers never offered (e.g. the widget's own results).
    """

    def __init__(self, viewer: Any, kind: type, *, optional: bool = False,
                 exclude: Any = None) -> None:
        super().__init__()
        self._viewer = viewer
        self._kind = kind
        self._optional = optional
        self._exclude = exclude
        # Long layer names must not widen the dock: elide instead.
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(14)
        self.refresh()

    def _names(self) -> list[str]:
        return [layer.name for layer in self._viewer.layers if isinstance(layer, self._kind)
                and not (self._exclude is not None and self._exclude(layer))]

    def refresh(self) -> None:
        current = self.currentText()
        names = ([NONE_ITEM] if self._optional else []) + self._names()
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentTextChanged.emit(self.currentText())

    def showPopup(self) -> None:
        self.refresh()
        super().showPopup()

    def layer(self) -> Any | None:
        """The chosen layer, or None."""
        name = self.currentText()
        if not name or name == NONE_ITEM or name not in self._viewer.layers:
            return None
        return self._viewer.layers[name]

    def select(self, layer: Any | None) -> None:
        """Choose ``layer`` (None = the ``(none)`` entry)."""
        self.refresh()
        self.setCurrentText(NONE_ITEM if layer is None else layer.name)


def device_combo() -> QComboBox:
    """``auto`` followed by every device ``cavlog_core`` can use here."""
    from cavlog_core.device import available_devices

    combo = QComboBox()
    combo.addItems(["auto", *available_devices()])
    combo.setToolTip("auto picks CUDA, then MPS, then the CPU")
    return combo


def model_combo() -> QComboBox:
    """A model menu that elides long checkpoint names instead of widening the dock."""
    combo = QComboBox()
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(14)
    return combo


def precision_combo() -> QComboBox:
    """``auto`` / ``fp32`` / ``bf16``, the tooltip saying what ``auto`` means on this machine."""
    from cavlog_core.config import PRECISIONS
    from cavlog_core.device import cpu_bf16_units

    combo = QComboBox()
    combo.addItems(list(PRECISIONS))
    units = cpu_bf16_units()
    here = (f"this CPU has {', '.join(units)}: bf16" if units
            else "this CPU has no bf16 units: fp32")
    combo.setToolTip(f"auto: bf16 on CUDA and on CPUs with AMX / AVX-512-BF16 ({here}); the map "
                     "correlates >= 0.99 with fp32")
    return combo


class StatusLabel(QLabel):
    """One line of status; errors in red."""

    def __init__(self) -> None:
        super().__init__("")
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    def info(self, text: str) -> None:
        self.setStyleSheet("")
        self.setText(text)

    def error(self, text: str) -> None:
        self.setStyleSheet("color: #ff6b6b;")
        self.setText(text)


def wait_until(done: Any, timeout: float | None = None) -> bool:
    """Process Qt events until ``done()`` is true (or ``timeout`` seconds); returns ``done()``."""
    app = QApplication.instance()
    start = time.monotonic()
    while not done():
        if timeout is not None and time.monotonic() - start > timeout:
            break
        if app is not None:
            app.processEvents()
        time.sleep(0.005)
    return bool(done())


def scrolling_layout(widget: QWidget) -> QVBoxLayout:
    """Give ``widget`` a vertical scroll area and return the layout inside it.

    The dock then stays usable on small screens instead of squeezing the napari canvas.
    """
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    inner = QWidget()
    area.setWidget(inner)
    outer.addWidget(area)
    return QVBoxLayout(inner)


def fit_scroll_width(widget: QWidget) -> None:
    """Make the dock at least as wide as the content of :func:`scrolling_layout` needs."""
    area = widget.findChild(QScrollArea)
    if area is not None and area.widget() is not None:
        bar = area.verticalScrollBar().sizeHint().width()
        area.setMinimumWidth(area.widget().minimumSizeHint().width() + bar + 4)


class JobControls(NamedTuple):
    """The start/cancel row, progress bar and status line of a widget that runs a worker."""

    start: QPushButton
    cancel: QPushButton
    progress: QProgressBar
    status: StatusLabel


def job_controls(root: QVBoxLayout, *, start_label: str, unit: str, on_start: Any,
                 on_cancel: Any) -> JobControls:
    """Add start/cancel buttons, a ``done / total unit`` progress bar and a status line."""
    row = QHBoxLayout()
    start = QPushButton(start_label)
    start.clicked.connect(lambda: on_start())
    cancel = QPushButton("Cancel")
    cancel.setEnabled(False)
    cancel.clicked.connect(on_cancel)
    row.addWidget(start)
    row.addWidget(cancel)
    root.addLayout(row)
    progress = QProgressBar()
    progress.setFormat(f"%v / %m {unit}")
    progress.setValue(0)
    progress.setTextVisible(False)  # no "0 / 100" before the first job sets the range
    root.addWidget(progress)
    status = StatusLabel()
    root.addWidget(status)
    return JobControls(start, cancel, progress, status)


def refill_combo(combo: QComboBox, items: list[tuple[str, Any]]) -> None:
    """Replace ``combo``'s ``(label, data)`` items, keeping the current choice if still offered."""
    current = combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    for label, data in items:
        combo.addItem(label, data)
    index = combo.findData(current) if current else -1
    combo.setCurrentIndex(max(index, 0))
    combo.blockSignals(False)


def connect_while_alive(widget: QWidget, handlers: Any) -> None:
    """Connect ``(emitter, callback)`` pairs of napari events until ``widget`` is destroyed (the
    viewer may outlive the widget)."""
    handlers = tuple(handlers)
    for emitter, callback in handlers:
        emitter.connect(callback)

    def _disconnect(*_args: Any) -> None:
        for emitter, callback in handlers:
            emitter.disconnect(callback)

    widget.destroyed.connect(_disconnect)


def single_shot_timer(parent: QWidget, ms: int, callback: Any) -> QTimer:
    """A stopped single-shot timer calling ``callback`` ``ms`` milliseconds after ``start()``."""
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(ms)
    timer.timeout.connect(callback)
    return timer


def set_silently(control: Any, value: Any) -> None:
    """Set a check box (checked), combo box (index), slider or spin box (value) without emitting
    its signals (a value shown, not a user's edit)."""
    control.blockSignals(True)
    try:
        if isinstance(control, QComboBox):
            control.setCurrentIndex(value)
        elif isinstance(control, QCheckBox):
            control.setChecked(value)
        else:
            control.setValue(value)
    finally:
        control.blockSignals(False)


class JobHost:
    """Mixin for a widget that runs one core generator at a time in a napari worker.

    The job is driven by :func:`napari_cavlog._runner.drive`, which stops it at its next event once
    ``cancel`` is called. The widget provides ``_on_event``, ``_on_returned``, ``_set_running`` and
    a ``status`` :class:`StatusLabel`.
    """

    _worker: Any = None
    _cancel: threading.Event

    @property
    def running(self) -> bool:
        """True while a job runs."""
        return self._worker is not None

    def _start_job(self, job: Any, *, message: str, block: bool) -> Any:
        from .._runner import drive

        self._cancel = threading.Event()
        worker = create_worker(drive, job, self._cancel, _start_thread=False)
        worker.yielded.connect(self._on_event)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._set_running(True)
        progress = getattr(self, "progress", None)
        if progress is not None:
            progress.setTextVisible(True)
        self.status.info(message)
        worker.start()
        if block:
            wait_until(lambda: self._worker is None)
        return worker

    def _refresh_models_safe(self) -> None:
        """Session-model listener: refill the model menu (``_refresh_models``), or unsubscribe
        once the widget's Qt object is gone."""
        from .._models import session_models

        try:
            self._refresh_models()  # type: ignore[attr-defined]
        except RuntimeError:  # the Qt object is gone (widget closed)
            session_models.unsubscribe(self._models_listener)  # type: ignore[attr-defined]

    def cancel(self) -> None:
        """Stop the running job at its next step; what was already done stays."""
        if self._worker is not None:
            self._cancel.set()
            self.status.info("cancelling …")

    def _on_finished(self) -> None:
        self._worker = None
        self._set_running(False)
