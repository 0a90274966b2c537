"""napari plugin for unsupervised brain-lesion segmentation (thin layer over ``cavlog_core``).

The widgets are imported lazily (``napari_cavlog.AnomalyWidget``), so importing the package, its
reader, writer or sample data never imports Qt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._models import demo_checkpoint_path, session_models

if TYPE_CHECKING:
    from ._qt.anomaly import AnomalyWidget
    from ._qt.finetune import FineTuneWidget
    from ._qt.tabs import CavlogWidget

__version__ = "0.1.0"

__all__ = [
    "AnomalyWidget",
    "CavlogWidget",
    "FineTuneWidget",
    "demo_checkpoint_path",
    "session_models",
]


def __getattr__(name: str) -> Any:
    if name == "AnomalyWidget":
        from ._qt.anomaly import AnomalyWidget

        return AnomalyWidget
    if name == "CavlogWidget":
        from ._qt.tabs import CavlogWidget

        return CavlogWidget
    if name == "FineTuneWidget":
        from ._qt.finetune import FineTuneWidget

        return FineTuneWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
