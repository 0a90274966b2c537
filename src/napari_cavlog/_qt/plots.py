"""Small matplotlib plots embedded in the widgets (Qt backend through qtpy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy

__all__ = ["LossPlot", "ThresholdExplorer"]

_FG = "#d0d0d0"


def _style(ax) -> None:
    ax.set_facecolor("none")
    ax.tick_params(colors=_FG, labelsize=7)
    for spine in ax.spines.values():
        spine.set_color(_FG)
    ax.xaxis.label.set_color(_FG)
    ax.yaxis.label.set_color(_FG)
    ax.title.set_color(_FG)


class _Canvas(FigureCanvasQTAgg):
    """A figure canvas whose redraws are throttled (at most one per ``_REDRAW_MS``).

    Live updates arrive much faster than matplotlib can draw (training events, slider moves);
    drawing once after a short delay keeps the GUI responsive and still shows the latest state.
    """

    _REDRAW_MS = 250

    def __init__(self, height: float) -> None:
        # Fixed margins: an automatic layout engine would double the cost of every redraw.
        fig = Figure(figsize=(4.0, height), dpi=80, facecolor="none")
        super().__init__(fig)
        self.setStyleSheet("background-color: transparent;")
        self.setMinimumHeight(int(height * 60))
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(self._REDRAW_MS)
        self._timer.timeout.connect(self.draw_idle)

    def schedule_draw(self) -> None:
        """Redraw soon; repeated calls before then cost nothing."""
        if not self._timer.isActive():
            self._timer.start()


class ThresholdExplorer(_Canvas):
    """Histogram of map values inside the brain and, with ground truth, the PR curve.

    The current threshold is a vertical line on the histogram and a dot on the PR curve.
    """

    def __init__(self) -> None:
        super().__init__(height=2.2)
        self._hist_ax, self._pr_ax = self.figure.subplots(1, 2)
        self.figure.subplots_adjust(left=0.1, right=0.98, bottom=0.2, top=0.88, wspace=0.3)
        for ax in (self._hist_ax, self._pr_ax):
            _style(ax)
        self._line = None
        self._dot = None
        self.clear()

    def clear(self) -> None:
        for ax in (self._hist_ax, self._pr_ax):
            ax.cla()
            _style(ax)
        self._hist_ax.set_title("map values in brain", fontsize=8)
        self._pr_ax.set_title("PR curve (needs ground truth)", fontsize=8)
        self._line = self._dot = None
        self.schedule_draw()

    def set_data(
        self,
        counts: np.ndarray,
        edges: np.ndarray,
        recall: np.ndarray | None = None,
        precision: np.ndarray | None = None,
    ) -> None:
        """Draw the histogram (log counts) and optionally the PR curve."""
        self.clear()
        ax = self._hist_ax
        ax.stairs(np.maximum(counts, 0), edges, fill=True, color="#f08a24")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xlim(0, 1)
        ax.set_xlabel("threshold", fontsize=7)
        self._line = ax.axvline(0.5, color="#33d6ff", lw=1.5)
        if recall is not None and precision is not None:
            pr = self._pr_ax
            pr.plot(recall, precision, color="#f08a24", lw=1.5)
            pr.set_xlim(0, 1.02)
            pr.set_ylim(0, 1.02)
            pr.set_xlabel("recall", fontsize=7)
            pr.set_ylabel("precision", fontsize=7)
            pr.set_title("PR curve (ground truth)", fontsize=8)
            (self._dot,) = pr.plot([0], [0], "o", color="#33d6ff", ms=6)
        self.schedule_draw()

    def show_data(self, data: Any) -> None:
        """Draw a ``napari_cavlog._controller.ExplorerData`` (None: :meth:`clear`)."""
        if data is None:
            self.clear()
            return
        self.set_data(data.counts, data.edges, data.recall, data.precision)
        self.set_threshold(data.threshold, data.metrics)

    def set_threshold(self, threshold: float, metrics: dict[str, float] | None) -> None:
        """Move the markers (redrawn after a short delay, so fast slider moves coalesce)."""
        if self._line is not None:
            self._line.set_xdata([threshold, threshold])
        if self._dot is not None and metrics is not None:
            self._dot.set_data([metrics["recall"]], [metrics["precision"]])
        self.schedule_draw()


class LossPlot(_Canvas):
    """Live training curves: total loss (left axis) and mean constraint f_c (right axis)."""

    def __init__(self) -> None:
        super().__init__(height=2.0)
        self._ax = self.figure.subplots()
        self._ax2 = self._ax.twinx()
        self.figure.subplots_adjust(left=0.16, right=0.84, bottom=0.2, top=0.95)
        self.reset()

    def reset(self) -> None:
        self._it: list[int] = []
        self._loss: list[float] = []
        self._fc: list[float] = []
        for ax in (self._ax, self._ax2):
            ax.cla()
            _style(ax)
        self._ax.set_xlabel("iteration", fontsize=7)
        self._ax.set_ylabel("loss", fontsize=7, color="#f08a24")
        self._ax2.set_ylabel("mean f_c", fontsize=7, color="#33d6ff")
        (self._loss_line,) = self._ax.plot([], [], color="#f08a24", lw=1.2)
        (self._fc_line,) = self._ax2.plot([], [], color="#33d6ff", lw=1.2)
        self._ax2.axhline(0.0, color="#33d6ff", lw=0.6, ls=":")
        self.schedule_draw()

    def append(self, iteration: int, loss: float | None, mean_fc: float | None) -> None:
        """Add one logged iteration (None values are skipped on their curve)."""
        self._it.append(int(iteration))
        self._loss.append(np.nan if loss is None else float(loss))
        self._fc.append(np.nan if mean_fc is None else float(mean_fc))
        self._loss_line.set_data(self._it, self._loss)
        self._fc_line.set_data(self._it, self._fc)
        for ax in (self._ax, self._ax2):
            ax.relim()
            ax.autoscale_view()
        self.schedule_draw()

    @property
    def points(self) -> Sequence[int]:
        return tuple(self._it)
