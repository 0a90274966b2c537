"""Built-in synthetic BraTS-like dataset: phantom skull-stripped axial FLAIR volumes with lesions.

Each subject is an analytic 3D phantom on a 1 mm RAS grid (cerebrum, cerebellum, brain stem,
cortical ribbon, sulci, ventricles, deep grey matter) with a random deformation, contrast, bias
field and noise, and either no lesion, one glioma (BraTS labels 1, 2, 4) or many small MS-like
white-matter lesions (label 1). Subject ``k`` of a dataset depends only on ``(seed, k)``.

Modules
-------
fields
    Grids, resampling, smooth noise and the ellipsoid / random-wave geometry.
anatomy
    The healthy brain's random parameters and depth fields.
lesions
    Glioma and MS lesion drawing and painting.
subject
    :func:`generate_subject`, :func:`subject_seed`, :func:`healthy_flags`, :func:`synth_affine`.
writer
    :func:`write_synthetic_dataset` (progress events), :func:`make_synthetic_dataset`,
    :func:`write_subject`, :func:`iter_subjects`.

See ``docs/synthetic_data.md`` for how the phantoms compare with real scans.
"""

from .anatomy import ANATOMY_VERSION
from .subject import SyntheticSubject, generate_subject, healthy_flags, subject_seed, synth_affine
from .writer import (
    SynthProgress,
    SynthResult,
    dataset_anatomy_version,
    iter_subjects,
    make_synthetic_dataset,
    write_subject,
    write_synthetic_dataset,
)

__all__ = [
    "ANATOMY_VERSION",
    "SynthProgress",
    "SynthResult",
    "SyntheticSubject",
    "dataset_anatomy_version",
    "generate_subject",
    "healthy_flags",
    "iter_subjects",
    "make_synthetic_dataset",
    "subject_seed",
    "synth_affine",
    "write_subject",
    "write_synthetic_dataset",
]
