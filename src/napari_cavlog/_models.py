"""Where the widgets find models: the demo weights and this session's fine-tuned ones (no Qt).

The anomaly widget lists, in order: the demo model shipped in ``napari_cavlog/weights/demo.pt``
(trained on the built-in synthetic dataset by ``scripts/train_demo_weights.py``), every checkpoint
registered in :data:`session_models` (the fine-tune widget adds its results there), and
checkpoint files the user picked from disk (also registered there).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ModelEntry",
    "ModelRegistry",
    "demo_checkpoint_path",
    "load_checkpoint_cached",
    "model_menu",
    "session_models",
]

_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def demo_checkpoint_path() -> Path:
    """Path of the built-in demo checkpoint (may be absent in a source checkout: check it)."""
    return _WEIGHTS_DIR / "demo.pt"


@dataclass(frozen=True)
class ModelEntry:
    """A model the anomaly widget can run.

    Attributes
    ----------
    label : str
        Text shown in the model menu.
    path : Path
        Checkpoint file (``cavlog_core.checkpoint`` format).
    origin : str
        ``"demo"``, ``"finetuned"`` or ``"file"``.
    """

    label: str
    path: Path
    origin: str


class ModelRegistry:
    """Checkpoints known in this napari session, shared by every widget instance.

    Listeners (callables without arguments) are told whenever an entry is added, so each open
    anomaly widget can refresh its menu. Adding a path already present returns the existing entry.
    """

    def __init__(self) -> None:
        self._entries: list[ModelEntry] = []
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def add(
        self, path: str | Path, *, label: str | None = None, origin: str = "file"
    ) -> ModelEntry:
        """Register checkpoint ``path`` (resolved) and notify listeners; returns its entry."""
        path = Path(path).expanduser().resolve()
        with self._lock:
            for entry in self._entries:
                if entry.path == path:
                    return entry
            entry = ModelEntry(label or f"{path.parent.name}/{path.name}", path, origin)
            self._entries.append(entry)
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
        return entry

    def entries(self) -> list[ModelEntry]:
        """Registered entries, oldest first."""
        with self._lock:
            return list(self._entries)

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def clear(self) -> None:
        """Forget every entry (tests)."""
        with self._lock:
            self._entries.clear()


#: The registry of this Python process (one napari session).
session_models = ModelRegistry()

def model_menu(registry: ModelRegistry | None = None) -> list[tuple[str, str | None]]:
    """``(label, checkpoint path)`` items of the anomaly widget's model menu: the demo model
    (path None when its weights are not installed), then every entry of ``registry``."""
    demo = demo_checkpoint_path()
    first = (("Demo model (synthetic data)", str(demo)) if demo.is_file()
             else ("Demo model (not installed)", None))
    prefixes = {"finetuned": "Fine-tuned: ", "file": "File: "}
    return [first, *((prefixes.get(e.origin, "") + e.label, str(e.path))
                     for e in (session_models if registry is None else registry).entries())]


_cache: dict[tuple[str, int, int, str], Any] = {}
_cache_lock = threading.Lock()


def load_checkpoint_cached(path: str | Path, device: str) -> Any:
    """``cavlog_core.checkpoint.load_checkpoint`` memoised on (path, size, mtime, device).

    Running the same model on several scans then loads the weights once. Only the most recent
    checkpoint is kept, so switching models does not pile up memory.
    """
    from cavlog_core.checkpoint import load_checkpoint
    from cavlog_core.errors import InputFileError

    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise InputFileError(path, "checkpoint file not found")
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, device)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    loaded = load_checkpoint(path, device=device)
    with _cache_lock:
        _cache.clear()
        _cache[key] = loaded
    return loaded
