"""BraTS data layer: finding and loading cases, brain masks, preprocessing, splits, slice arrays.

See ``docs/ARCHITECTURE.md`` (``cavlog_core.data``) for the contract.
"""

from .brainmask import compute_brain_mask
from .dataset import (
    BuildProgress,
    SliceArrays,
    build_slice_arrays,
    healthy,
    iter_slice_arrays,
)
from .io import (
    Case,
    CaseFiles,
    NiftiGeometry,
    case_from_arrays,
    find_cases,
    iter_loaded_cases,
    load_case,
    save_like,
)
from .preprocess import (
    SliceBatch,
    SliceGeometry,
    match_histogram,
    normalize_intensity,
    prepare_slices,
    select_slices,
)
from .splits import (
    keep_for_evaluation,
    lesion_fraction,
    lesion_free_slices,
    split_cases,
    split_counts,
)

__all__ = [
    "BuildProgress",
    "Case",
    "CaseFiles",
    "NiftiGeometry",
    "SliceArrays",
    "SliceBatch",
    "SliceGeometry",
    "build_slice_arrays",
    "case_from_arrays",
    "compute_brain_mask",
    "find_cases",
    "healthy",
    "iter_loaded_cases",
    "iter_slice_arrays",
    "keep_for_evaluation",
    "lesion_fraction",
    "lesion_free_slices",
    "load_case",
    "match_histogram",
    "normalize_intensity",
    "prepare_slices",
    "save_like",
    "select_slices",
    "split_cases",
    "split_counts",
]
