"""The lesion table of the anomaly widget: one row per 3-D lesion, click a row to go there."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
)

__all__ = ["LesionPanel"]

_COLUMNS = ("#", "Volume (mL)", "Max score", "Axial slices", "Centroid R, A, S (mm)")


class LesionPanel(QGroupBox):
    """Total lesion volume, a minimum-size filter and the table of lesions.

    Signals
    -------
    min_volume_changed(float)
        The user changed the minimum lesion volume (mL).
    lesion_chosen(int)
        A row was clicked: the index of the lesion in the last :meth:`show_table`.
    """

    min_volume_changed = Signal(float)
    lesion_chosen = Signal(int)

    def __init__(self, *, min_volume_ml: float) -> None:
        super().__init__("Lesions (3-D connected components of the mask)")
        form = QFormLayout(self)
        self.min_spin = QDoubleSpinBox()
        self.min_spin.setRange(0.0, 1000.0)
        self.min_spin.setDecimals(3)
        self.min_spin.setSingleStep(0.01)
        self.min_spin.setSuffix(" mL")
        self.min_spin.setValue(min_volume_ml)
        self.min_spin.setToolTip("lesions smaller than this are not listed or counted")
        self.min_spin.valueChanged.connect(self.min_volume_changed.emit)
        form.addRow("Smallest lesion", self.min_spin)
        self.total = QLabel("–")
        self.total.setWordWrap(True)
        form.addRow("Total", self.total)
        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(_COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setMinimumHeight(120)
        self.table.setToolTip("click a lesion to show its central slice")
        self.table.cellClicked.connect(lambda row, _col: self.lesion_chosen.emit(row))
        form.addRow(self.table)

    @property
    def min_volume_ml(self) -> float:
        return float(self.min_spin.value())

    def clear(self) -> None:
        self.table.setRowCount(0)
        self.total.setText("–")

    def show_table(self, table: Any) -> None:
        """Fill the rows from a ``cavlog_core.lesions.LesionTable`` (None: :meth:`clear`)."""
        if table is None:
            self.clear()
            return
        lesions = table.lesions
        self.table.setRowCount(len(lesions))
        for row, les in enumerate(lesions):
            r, a, s = les.centroid_mm
            cells = (str(les.label), f"{les.volume_ml:.2f}", f"{les.max_score:.3f}",
                     f"{les.z_first}–{les.z_last}", f"{r:.0f}, {a:.0f}, {s:.0f}")
            for col, text in enumerate(cells):
                self.table.setItem(row, col, QTableWidgetItem(text))
        smaller = (f"; {table.removed} smaller than {table.min_volume_ml:g} mL not counted"
                   if table.removed else "")
        self.total.setText(f"{table.total_ml:.2f} mL in {len(lesions)} lesion(s){smaller}")
