"""Large scans are read in a worker thread, so File > Open never freezes the viewer.

Reading, validating and reorienting a 512 x 512 x 400 scan takes about 12 s on 2 cores (most of
it memory-bound copies); napari calls readers on the GUI thread. :func:`read_in_background` starts
a napari worker that builds the layer data and adds the layers to the current viewer when done,
with a notification when it starts and one line if it fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["read_in_background"]


def _load(paths: Sequence[Path], label: str) -> list[Any] | str:
    """The layer data of ``paths``, or the one-line message of why they cannot be read.

    Failures are returned rather than raised: napari would relay a worker's exception as a
    traceback notification.
    """
    from cavlog_core.data.io import find_cases, load_case
    from cavlog_core.errors import CavlogError

    from ._layers import case_layer_data

    layers: list[Any] = []
    try:
        for p in paths:
            for files in find_cases(Path(p)):
                layers.extend(case_layer_data(load_case(files)))
    except CavlogError as err:
        return str(err)
    except (OSError, MemoryError) as err:
        return f"{label}: {getattr(err, 'strerror', None) or type(err).__name__}"
    return layers


def read_in_background(viewer: Any, paths: Sequence[Path], *, label: str) -> Any:
    """Load ``paths`` in a worker and add their layers to ``viewer``; returns the worker."""
    from napari.layers import Layer
    from napari.qt.threading import create_worker
    from napari.utils.notifications import show_error, show_info

    def add(result: list[Any] | str) -> None:
        if isinstance(result, str):
            show_error(f"napari-cavlog: {result}")
            return
        for data, kwargs, kind in result:
            viewer.add_layer(Layer.create(data, kwargs, kind))

    worker = create_worker(_load, list(paths), label, _start_thread=False)
    worker.returned.connect(add)
    show_info(f"napari-cavlog: reading {label} in the background …")
    worker.start()
    return worker
