"""napari sample data: a synthetic FLAIR case with a glioma-like lesion (no download, no Qt)."""

from __future__ import annotations

from ._layers import LayerData, case_layer_data

__all__ = ["SAMPLE_SEED", "SAMPLE_SHAPE", "synthetic_case"]

#: The sample is one subject of ``cavlog synth`` at the default BraTS grid (1 mm, RAS).
SAMPLE_SHAPE: tuple[int, int, int] = (240, 240, 155)
SAMPLE_SEED = 1


def synthetic_case(
    seed: int = SAMPLE_SEED, shape: tuple[int, int, int] = SAMPLE_SHAPE
) -> list[LayerData]:
    """FLAIR image and ground-truth labels of one lesioned synthetic subject.

    Parameters
    ----------
    seed : int
        Subject seed of ``cavlog_core.synth.generate_subject``.
    shape : tuple of 3 int
        Volume shape ``(X, Y, Z)`` in canonical RAS at 1 mm.

    Returns
    -------
    list of (data, kwargs, layer_type)
        As :func:`napari_cavlog._layers.case_layer_data`: display order ``(Z, Y, X)``.
    """
    from cavlog_core.data.io import case_from_arrays
    from cavlog_core.synth import generate_subject, synth_affine

    subject = generate_subject(seed, shape, healthy=False)
    case = case_from_arrays(
        subject.flair,
        seg=subject.seg,
        brain_mask=subject.brain,
        affine=synth_affine(subject.flair.shape),
        case_id=f"SYN-sample-{seed}",
    )
    return case_layer_data(case)
