"""Cases <-> napari layer data, with the NIfTI geometry carried in layer metadata (no Qt).

Every layer made by the plugin carries ``metadata["cavlog"]``, a dict with

``case_id``
    The scan's identifier (file-name stem).
``source_path``
    Where the scan came from (``""`` for generated data).
``affine``, ``spacing``
    The canonical (RAS) 4x4 affine and voxel spacing ``(sx, sy, sz)`` in mm.
``geometry``
    The original NIfTI geometry (``cavlog_core.data.io.NiftiGeometry``), so the writer can save
    any layer back in the source scan's orientation, affine and header.
``brain_mask``
    The brain mask in display order (shared, not copied, between a case's layers).
``role``
    ``"flair"``, ``"ground_truth"``, ``"anomaly"``, ``"mask"`` or ``"errors"``.
``case`` (FLAIR layers made by the reader only)
    A :class:`CaseRef`: the loaded ``cavlog_core`` ``Case`` and the display array handed to the
    layer. :func:`case_from_layer` returns that very ``Case`` while the layer still holds that
    array, so a run never rebuilds (and copies) the scan the reader already loaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._orient import from_display, scale_from_spacing, spacing_from_scale, to_display

__all__ = [
    "CASE_KEY",
    "GT_COLORS",
    "CaseRef",
    "LayerData",
    "case_from_layer",
    "case_layer_data",
    "derived_metadata",
    "layer_case_id",
    "layer_role",
    "reader_case",
    "robust_contrast_limits",
]

LayerData = tuple[np.ndarray, dict[str, Any], str]

#: Key of the :class:`CaseRef` in a FLAIR layer's ``metadata["cavlog"]``.
CASE_KEY = "case"


class CaseRef:
    """The ``Case`` a reader loaded and the display array it gave the FLAIR layer.

    Kept in ``metadata["cavlog"]["case"]`` (in memory only). Copies share it (napari copies
    metadata when duplicating a layer, whose data is then a new array: the identity check in
    :meth:`case_for` fails and the copy is rebuilt from its own data); pickling drops it, so no
    volume is ever serialised with the metadata.
    """

    __slots__ = ("case", "data")

    def __init__(self, case: Any, data: np.ndarray | None) -> None:
        self.case = case
        self.data = data

    def case_for(self, data: Any) -> Any:
        """The ``Case`` when ``data`` is the very array the reader made for it, else None."""
        return self.case if self.case is not None and data is self.data else None

    def __copy__(self) -> CaseRef:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> CaseRef:
        return self

    def __reduce__(self) -> tuple[Any, tuple[None, None]]:
        return CaseRef, (None, None)

    def __repr__(self) -> str:
        return f"CaseRef({self.case!r})"

#: BraTS ground-truth colours: necrotic/non-enhancing core red, oedema yellow, enhancing orange
#: (label 4 up to BraTS 2021, 3 from 2023). Distinct from the plugin's mask (cyan) and error
#: (magenta / green) colours.
GT_COLORS: dict[int | None, str] = {
    None: "transparent", 0: "transparent", 1: "#ff3030", 2: "#ffd700", 3: "#ff8c00",
    4: "#ff8c00",
}


def robust_contrast_limits(flair: np.ndarray, brain: np.ndarray) -> tuple[float, float]:
    """Display window: the 0.5 and 99.5 percentiles of the intensities inside the brain."""
    inside = flair[brain] if brain.any() else flair.ravel()
    lo, hi = (float(v) for v in np.percentile(inside, (0.5, 99.5)))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def case_layer_data(case: Any) -> list[LayerData]:
    """The layers of a ``cavlog_core`` ``Case``: FLAIR image and, when present, ground-truth labels.

    Parameters
    ----------
    case : cavlog_core.data.io.Case
        Canonical ``(X, Y, Z)`` arrays with affine, spacing and geometry.

    Returns
    -------
    list of (data, kwargs, layer_type)
        ``(Z, Y, X)`` display arrays (see :mod:`napari_cavlog._orient`) with ``scale`` set from the
        voxel spacing and the geometry in ``metadata["cavlog"]``; the FLAIR's also holds ``case``
        itself (:class:`CaseRef`), reused by :func:`case_from_layer`.
    """
    brain = to_display(np.asarray(case.brain_mask, dtype=bool))
    base = {
        "case_id": case.case_id,
        "source_path": str(case.source_path or ""),
        "affine": np.asarray(case.affine, dtype=np.float64),
        "spacing": tuple(float(s) for s in case.spacing),
        "geometry": case.geometry,
        "brain_mask": brain,
    }
    scale = scale_from_spacing(case.spacing)
    flair = to_display(np.asarray(case.flair, dtype=np.float32))
    flair_meta = {**base, "role": "flair", CASE_KEY: CaseRef(case, flair)}
    layers: list[LayerData] = [(
        flair,
        {
            "name": f"{case.case_id} FLAIR",
            "scale": scale,
            "colormap": "gray",
            "contrast_limits": robust_contrast_limits(flair, brain),
            "metadata": {"cavlog": flair_meta},
        },
        "image",
    )]
    if case.seg is not None:
        layers.append((
            to_display(np.asarray(case.seg, dtype=np.uint8)),
            {
                "name": f"{case.case_id} ground truth",
                "scale": scale,
                "opacity": 0.5,
                "colormap": dict(GT_COLORS),
                "metadata": {"cavlog": {**base, "role": "ground_truth"}},
            },
            "labels",
        ))
    return layers


def derived_metadata(source: dict[str, Any] | None, role: str) -> dict[str, Any]:
    """``metadata`` for a layer computed from a FLAIR layer (same geometry, new role)."""
    meta = dict((source or {}).get("cavlog", {}))
    meta.pop(CASE_KEY, None)  # the source's Case belongs to the source layer only
    meta["role"] = role
    return {"cavlog": meta}


def layer_role(layer: Any) -> str | None:
    """``metadata["cavlog"]["role"]`` of a layer (None for layers this plugin did not make)."""
    return (getattr(layer, "metadata", None) or {}).get("cavlog", {}).get("role")


def layer_case_id(layer: Any) -> str | None:
    """``metadata["cavlog"]["case_id"]`` of a layer (None for layers this plugin did not make)."""
    return (getattr(layer, "metadata", None) or {}).get("cavlog", {}).get("case_id")


def case_from_layer(
    data: np.ndarray,
    metadata: dict[str, Any] | None,
    scale: tuple[float, ...],
    *,
    name: str = "layer",
) -> Any:
    """The ``cavlog_core`` ``Case`` of a FLAIR image layer's data, metadata and scale.

    A FLAIR layer made by this plugin's reader, whose data is still the array the reader gave it,
    returns the reader's own ``Case`` (:func:`reader_case`: no copy, no rebuild). Otherwise the
    case is rebuilt from the data: layers read by this plugin carry their affine and brain mask
    in ``metadata["cavlog"]``; other 3D image layers are taken to be in the same display order
    ``(Z, Y', X)`` with the layer scale as voxel spacing, their brain mask computed by
    ``cavlog_core``. (An in-place edit of the reader's array is not noticed: assign a new
    array to ``layer.data`` instead.)

    Raises
    ------
    CavlogError
        When the layer is not a 3D volume (one line naming the layer).
    """
    from cavlog_core.data.io import case_from_arrays
    from cavlog_core.errors import CavlogError

    known = reader_case(data, metadata)
    if known is not None:
        return known
    array = np.asarray(data)
    if array.ndim != 3:
        raise CavlogError(f"layer {name!r}: expected a 3D volume, got shape {array.shape}")
    meta = (metadata or {}).get("cavlog", {})
    flair = from_display(array.astype(np.float32, copy=False))
    brain = meta.get("brain_mask")
    brain = from_display(brain) if brain is not None and brain.shape == array.shape else None
    affine = meta.get("affine")
    if affine is None:
        affine = np.diag([*spacing_from_scale(scale), 1.0])
    return case_from_arrays(
        flair, brain_mask=brain, affine=np.asarray(affine), case_id=str(meta.get("case_id", name))
    )


def reader_case(data: Any, metadata: dict[str, Any] | None) -> Any:
    """The reader's ``Case`` of a FLAIR layer while ``data`` is the array the reader made for it
    (see :class:`CaseRef`); None for other layers and for replaced data."""
    ref = ((metadata or {}).get("cavlog") or {}).get(CASE_KEY)
    return ref.case_for(data) if isinstance(ref, CaseRef) else None
