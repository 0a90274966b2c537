"""Large scans are read in a worker thread, so File > Open never freezes the viewer.

Reading, validating and reorienting a 512 x 512 x 400 scan takes about 12 s on 2 cores (most of
it memory-bound copies); napari calls readers on the GUI thread. :func:`read_in_background` runs
:func:`napari_cavlog._reader.load_layer_data` in a napari worker and adds the layers to the viewer
when done, with a notification when it starts and one line per scan that cannot be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["read_in_background"]


def read_in_background(viewer: Any, paths: Sequence[Path], *, label: str) -> Any:
    """Load ``paths`` in a worker and add their layers to ``viewer``; returns the worker.

    Failures come back as messages, never as exceptions: napari would relay a worker's
    exception as a traceback notification.
    """
    from napari.layers import Layer
    from napari.qt.threading import create_worker
    from napari.utils.notifications import show_error, show_info

    from .._reader import load_layer_data

    def add(result: tuple[list[Any], list[str]]) -> None:
        layers, problems = result
        for message in problems:
            show_error(f"napari-cavlog: {message}")
        for data, kwargs, kind in layers:
            viewer.add_layer(Layer.create(data, kwargs, kind))

    worker = create_worker(load_layer_data, list(paths), _start_thread=False)
    worker.returned.connect(add)
    show_info(f"napari-cavlog: reading {label} in the background …")
    worker.start()
    return worker
