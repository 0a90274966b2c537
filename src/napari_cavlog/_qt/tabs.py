"""The plugin's main dock: "Anomaly segmentation" and "Fine-tune" as two tabs of one widget.

``napari -w napari-cavlog`` docks a plugin's first widget; this one holds both, so the
fine-tune controls never squeeze the anomaly widget into a strip of the dock area.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QTabWidget

from .anomaly import AnomalyWidget
from .finetune import FineTuneWidget

__all__ = ["CavlogWidget"]


class CavlogWidget(QTabWidget):
    """Both widgets of the plugin as tabs.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    anomaly : AnomalyWidget
    finetune : FineTuneWidget
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.anomaly = AnomalyWidget(napari_viewer)
        self.finetune = FineTuneWidget(napari_viewer)
        self.addTab(self.anomaly, "Anomaly segmentation")
        self.addTab(self.finetune, "Fine-tune")
        self.setMinimumWidth(max(self.anomaly.minimumSizeHint().width(),
                                 self.finetune.minimumSizeHint().width()))
