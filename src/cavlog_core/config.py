"""Frozen configuration dataclasses: the single source of defaults for the CLI, the GUI and the API.

Defaults follow Silva-Rodríguez, Naranjo & Dolz, "Looking at the whole picture: constrained
unsupervised anomaly segmentation", BMVC 2021 (p = 0.2, t = 20, λ = 10, batch 32, z = 32, 224²).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import CavlogError

_SLICES_RE = re.compile(r"^(central:\d+|brain)$")

Constraint = Literal["barrier", "l2", "pixel-l1", "none"]
Recon = Literal["bce", "l2", "ssim"]
#: ``TrainConfig.constraint`` choices: the extended log-barrier (the paper), an image-level L2
#: penalty, CAVGA's pixel-level L1 expansion loss, or none.
CONSTRAINTS: tuple[str, ...] = ("barrier", "l2", "pixel-l1", "none")
#: ``TrainConfig.recon`` choices: the VAE's reconstruction loss.
RECONS: tuple[str, ...] = ("bce", "l2", "ssim")

#: ``ModelConfig.cam_weights``: how the attention is formed from the CAM-stage activations
#: (:mod:`cavlog_core.models.gradcam` explains each).
CAM_WEIGHTS = ("gradient", "gradient-running-bn", "gradient-frozen-bn", "mean")
#: ``ModelConfig.map_flips``: 1 pass (the paper), the mean with the left-right mirror, or the
#: mean over the four flips of the slice (both in-plane axes).
MAP_FLIPS = (1, 2, 4)
#: ``PreprocessConfig.normalization``: robust brain percentiles, or the authors' code (per-volume
#: maximum, then per-slice histogram matching to a healthy reference slice).
NORMALIZATIONS = ("percentile", "max-histogram")
#: Largest model input side and latent size accepted (a checkpoint asking for more is refused
#: before anything is allocated).
MAX_RESOLUTION = 1024
MAX_LATENT_DIM = 4096
#: ``InferenceConfig.precision`` choices: ``auto`` is bf16 on CUDA and on CPUs with bf16 units
#: (:func:`cavlog_core.device.resolve_precision`), else fp32.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
#: ``SynthConfig.lesions``: the synthetic disease.
LESION_PRESETS = ("glioma", "ms")

#: Iterations the napari fine-tune widget proposes when starting from a trained model: about
#: two minutes for the demo model (128², width 0.25) on two CPU cores, enough to adapt the
#: constraint to new healthy scans (docs/benchmark.md, leave-one-case-out).
FINETUNE_ITERATIONS = 300


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise CavlogError(message)


@dataclass(frozen=True)
class PreprocessConfig:
    """How volumes become model-ready 2D axial slices.

    Parameters
    ----------
    resolution : int
        Side of the square model input; slices are resized preserving aspect and zero-padded.
    slices : str
        ``"central:N"`` (the paper's N central axial slices of the brain) or ``"brain"``
        (every axial slice whose brain area is at least ``min_brain_fraction`` of the largest).
    min_brain_fraction : float
        Used by ``slices="brain"`` and by inference to skip slices with almost no brain.
    percentiles : tuple of float
        Robust intensity normalisation: the brain's ``(low, high)`` percentiles map to 0 and 1.
    histogram_reference : str or None
        Optional path of a reference NIfTI for histogram matching after normalisation.
    normalization : {"percentile", "max-histogram"}
        ``"percentile"``: the brain's ``percentiles`` map to 0 and 1. ``"max-histogram"``: the
        authors' code (jusiro/constrained_anomaly_segmentation): divide by the volume's maximum,
        then match each slice's brain histogram to a fixed healthy reference slice.
    min_lesion_fraction : float
        Evaluation drops scans whose lesion fraction over the selected slices is below this
        (the paper's 0.1 %).
    mask_erosion : int
        Pixels (at model resolution) by which the brain mask is eroded before maps are
        min-max normalised, so the bright skull-stripping rim does not dominate.
    """

    resolution: int = 224
    slices: str = "central:10"
    min_brain_fraction: float = 0.15
    percentiles: tuple[float, float] = (1.0, 99.0)
    histogram_reference: str | None = None
    min_lesion_fraction: float = 0.001
    mask_erosion: int = 2
    normalization: str = "percentile"

    def __post_init__(self) -> None:
        _check(
            self.resolution >= 32 and self.resolution % 32 == 0,
            f"resolution={self.resolution}: must be a multiple of 32, at least 32 "
            "(e.g. 64, 128, 224)",
        )
        _check(
            bool(_SLICES_RE.match(self.slices)),
            f"slices={self.slices!r}: expected 'central:N' or 'brain'",
        )
        lo, hi = self.percentiles
        _check(0 <= lo < hi <= 100, f"percentiles={self.percentiles}: need 0 <= low < high <= 100")
        _check(
            0 <= self.min_brain_fraction < 1,
            f"min_brain_fraction={self.min_brain_fraction}: must be in [0, 1)",
        )
        _check(
            0 <= self.min_lesion_fraction < 1,
            f"min_lesion_fraction={self.min_lesion_fraction}: must be in [0, 1)",
        )
        _check(self.mask_erosion >= 0, f"mask_erosion={self.mask_erosion}: must be >= 0")
        _check(
            self.normalization in NORMALIZATIONS,
            f"normalization={self.normalization!r}: expected one of {', '.join(NORMALIZATIONS)}",
        )


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of :class:`cavlog_core.ResNetVAE`.

    ``width`` scales every channel count (1.0 = ResNet-18's 64-128-256-512 encoder and the
    paper's decoder, about 14.5 M parameters); ``cam_stage`` is the encoder stage (1-4) whose
    activations give the Grad-CAM (the paper: 1, "layer1").
    """

    resolution: int = 224
    width: float = 1.0
    latent_dim: int = 32
    cam_stage: int = 1
    dropout: float = 0.0
    #: How the attention map is formed from the CAM-stage activations A (see
    #: :mod:`cavlog_core.models.gradcam`): "gradient" (the paper's Grad-CAM), "gradient-running-bn"
    #: (Grad-CAM whose training pass goes through the later BatchNorms with their running
    #: statistics, i.e. the map used at inference), "gradient-frozen-bn" (the later BatchNorms'
    #: batch statistics held constant) or "mean" (channel mean of A, as the authors' code).
    cam_weights: str = "gradient"
    #: Test-time flips of the anomaly map (every method): the map is the mean of the maps of the
    #: slice and of its flips, each flipped back: 1 (one pass, the paper), 2 (and its
    #: left-right mirror) or 4 (all four flips of the two in-plane axes), at 1x, 2x, 4x the cost.
    #: One Grad-CAM pass lights a lesion displaced towards one side of the image, each flip
    #: towards another; their mean is centred on it (README, "Flip-averaged maps"). Stored with
    #: the model because the healthy thresholds are calibrated on the map it defines.
    map_flips: int = 1

    def __post_init__(self) -> None:
        _check(
            32 <= self.resolution <= MAX_RESOLUTION and self.resolution % 32 == 0,
            f"resolution={self.resolution}: must be a multiple of 32 in [32, {MAX_RESOLUTION}]",
        )
        _check(0 < self.width <= 4, f"width={self.width}: must be in (0, 4]")
        _check(1 <= self.latent_dim <= MAX_LATENT_DIM,
               f"latent_dim={self.latent_dim}: must be in [1, {MAX_LATENT_DIM}]")
        _check(self.cam_stage in (1, 2, 3, 4), f"cam_stage={self.cam_stage}: must be 1, 2, 3 or 4")
        _check(0 <= self.dropout < 1, f"dropout={self.dropout}: must be in [0, 1)")
        _check(
            self.cam_weights in CAM_WEIGHTS,
            f"cam_weights={self.cam_weights!r}: expected one of {', '.join(CAM_WEIGHTS)}",
        )
        _check(self.map_flips in MAP_FLIPS,
               f"map_flips={self.map_flips!r}: expected one of {', '.join(map(str, MAP_FLIPS))}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and loss settings (paper defaults).

    ``iterations`` counts batches; when ``epochs`` is set it wins and iterations are derived from
    the dataset size. ``warmup_iterations`` batches use the VAE loss only. ``t_growth`` > 1
    multiplies t by that factor every ``t_every`` iterations after warm-up (optional schedule).
    ``amp``: bf16 autocast on CUDA. ``cpu_bf16``: bf16 autocast on a CPU with AMX /
    AVX-512-BF16 units (about 1.5x faster fine-tuning; off by default so that CPU results do not
    depend on the CPU model; the napari fine-tune widget turns it on with precision ``auto``).
    """

    method: str = "constrained"
    #: The method's own hyper-parameters by name (its ``Options`` dataclass fills the rest).
    method_options: dict[str, Any] = field(default_factory=dict)
    iterations: int = 2000
    epochs: int | None = None
    warmup_iterations: int = 400
    batch_size: int = 32
    lr: float = 1e-4
    beta: float = 1.0
    p: float = 0.2
    t: float = 20.0
    lam: float = 10.0
    constraint: Constraint = "barrier"
    t_growth: float = 1.0
    t_every: int = 1000
    recon: Recon = "bce"
    device: str = "auto"
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.81, 0.095, 0.095)  # 335 -> 271/32/32
    amp: bool = True
    cpu_bf16: bool = False
    log_every: int = 10
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        opts = self.method_options
        _check(isinstance(opts, dict) and all(isinstance(k, str) for k in opts)
               and all(isinstance(v, (bool, int, float, str)) for v in opts.values()),
               f"method_options={opts!r}: need a dict of name -> number, bool or text")
        _check(self.iterations >= 1, f"iterations={self.iterations}: must be >= 1")
        _check(self.epochs is None or self.epochs >= 1, f"epochs={self.epochs}: must be >= 1")
        _check(
            self.warmup_iterations >= 0, f"warmup_iterations={self.warmup_iterations}: must be >= 0"
        )
        _check(self.batch_size >= 1, f"batch_size={self.batch_size}: must be >= 1")
        _check(self.lr > 0, f"lr={self.lr}: must be > 0")
        _check(self.beta >= 0, f"beta={self.beta}: must be >= 0")
        _check(0 <= self.p < 1, f"p={self.p}: must be in [0, 1)")
        _check(self.t > 0, f"t={self.t}: must be > 0")
        _check(self.lam >= 0, f"lam={self.lam}: must be >= 0")
        _check(
            self.constraint in CONSTRAINTS,
            f"constraint={self.constraint!r}: expected one of {', '.join(CONSTRAINTS)}",
        )
        _check(
            self.recon in RECONS, f"recon={self.recon!r}: expected one of {', '.join(RECONS)}"
        )
        _check(self.t_growth >= 1, f"t_growth={self.t_growth}: must be >= 1")
        _check(self.t_every >= 1, f"t_every={self.t_every}: must be >= 1")
        _check(self.log_every >= 1, f"log_every={self.log_every}: must be >= 1")
        _check(self.checkpoint_every >= 1,
               f"checkpoint_every={self.checkpoint_every}: must be >= 1")
        _check(0 <= self.seed < 2**32, f"seed={self.seed}: must be in [0, 2**32)")
        fr = self.split_fractions
        _check(
            len(fr) == 3 and all(f >= 0 for f in fr) and abs(sum(fr) - 1) < 1e-6,
            f"split_fractions={fr}: need three non-negative fractions summing to 1",
        )


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs; stored in every checkpoint."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check(
            self.preprocess.resolution == self.model.resolution,
            f"preprocess.resolution={self.preprocess.resolution} differs from "
            f"model.resolution={self.model.resolution}",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`CavlogError`."""

        def build(kind: type, sub: dict[str, Any]) -> Any:
            names = {f.name for f in dataclasses.fields(kind)}
            unknown = set(sub) - names
            _check(not unknown, f"{kind.__name__}: unknown keys {sorted(unknown)}")
            fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in sub.items()}
            return kind(**fixed)

        return cls(
            preprocess=build(PreprocessConfig, d.get("preprocess", {})),
            model=build(ModelConfig, d.get("model", {})),
            train=build(TrainConfig, d.get("train", {})),
        )


@dataclass(frozen=True)
class InferenceConfig:
    """Defaults of an inference run: ``cavlog predict`` / ``evaluate`` / ``calibrate``, the GUI.

    ``threshold`` is a threshold spec (``0.5``, ``healthy:fpr1``, ``oracle`` ... see
    :func:`cavlog_core.maps.thresholds.parse_threshold`); ``slices`` which axial slices get a map
    (``brain``: every slice with brain, ``central:N``).
    """

    batch_size: int = 32
    device: str = "auto"
    slices: str = "brain"
    precision: str = "auto"
    threshold: str = "0.5"

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, f"batch_size={self.batch_size}: must be >= 1")
        _check(self.precision in PRECISIONS,
               f"precision={self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        _check(bool(_SLICES_RE.match(self.slices)),
               f"slices={self.slices!r}: expected 'brain' or 'central:N'")


@dataclass(frozen=True)
class SynthConfig:
    """The built-in synthetic BraTS-like dataset (``cavlog synth``).

    ``lesions`` is the disease of the lesioned subjects: ``"glioma"`` (one tumour with core,
    enhancing rim and oedema covering 8-20 % of the brain on the 10 central slices, as BraTS) or
    ``"ms"`` (many small periventricular, juxtacortical and deep white-matter lesions, 0.5-3 %).
    """

    subjects: int = 20
    seed: int = 0
    shape: tuple[int, int, int] = (240, 240, 155)
    healthy_fraction: float = 0.2
    lesions: str = "glioma"

    def __post_init__(self) -> None:
        _check(self.subjects >= 1, f"subjects={self.subjects}: must be >= 1")
        _check(
            len(self.shape) == 3 and all(s >= 16 for s in self.shape),
            f"shape={self.shape}: need three sizes, each >= 16",
        )
        _check(
            0 <= self.healthy_fraction <= 1,
            f"healthy_fraction={self.healthy_fraction}: must be in [0, 1]",
        )
        _check(
            self.lesions in LESION_PRESETS,
            f"lesions={self.lesions!r}: expected one of {', '.join(LESION_PRESETS)}",
        )
