"""What a benchmark runs: Table 1's methods, or one of the paper's ablations.

Silva-Rodríguez, Naranjo & Dolz, BMVC 2021: Table 1 compares residual and attention baselines
with the constrained model; Sec. 5 ablates the log-barrier against an image-level L2 penalty over
the margin p, the image-level against a pixel-level constraint, λ, the Grad-CAM stage, t and the
reconstruction loss. Each *setting* is one configuration trained once per seed in its own folder.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from ..config import CAM_WEIGHTS, MAP_FLIPS, RunConfig
from ..errors import CavlogError
from ..methods import list_methods

__all__ = [
    "ABLATIONS",
    "HEALTHY_PERCENTILE_ABLATION",
    "TABLE1_METHODS",
    "Ablation",
    "Setting",
    "ablation",
    "method_settings",
    "run_folders",
]

#: Table 1 order: residual baselines, attention baselines, the proposed model, FLAIR thresholding.
TABLE1_METHODS: tuple[str, ...] = (
    "ae", "vae", "context-ae", "context-vae", "bayesian-ae", "bayesian-vae", "restoration-vae",
    "anovaegan", "f-anogan", "gradcam-vae", "gradcam-vae-d", "cavga", "constrained",
    "flair-threshold",
)

_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Setting:
    """One configuration of a benchmark.

    Attributes
    ----------
    label : str
        Row name and run folder (``DIR/<label>/seed<k>/``); letters, digits, ``_.-``.
    method : str
        Registered method name.
    train, model : dict
        Overrides of :class:`~cavlog_core.config.TrainConfig` / ``ModelConfig`` fields.
    axis : str or None
        The ablated quantity (``"p"``, ``"lam"`` ...), for plots; None for Table 1 rows.
    value : Any
        Its value in this setting.
    group : str or None
        Curve name when an ablation compares families (``"barrier"`` vs ``"l2"``).
    """

    label: str
    method: str
    train: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    axis: str | None = None
    value: Any = None
    group: str | None = None

    def __post_init__(self) -> None:
        if not _LABEL_RE.match(self.label):
            raise CavlogError(f"setting label {self.label!r}: use letters, digits, '_', '.', '-'")

    def apply(self, base: RunConfig) -> RunConfig:
        """Return ``base`` with this setting's method and overrides (validated)."""
        train = dataclasses.replace(base.train, method=self.method, **self.train)
        model = dataclasses.replace(base.model, **self.model)
        return dataclasses.replace(base, model=model, train=train)


@dataclass(frozen=True)
class Ablation:
    """A named group of settings; ``evaluation_only`` ablations reuse one trained model."""

    name: str
    description: str
    settings: tuple[Setting, ...]
    evaluation_only: bool = False


HEALTHY_PERCENTILE_ABLATION = "healthy-percentile"


def _p_grid() -> tuple[float, ...]:
    return tuple(round(0.05 * i, 2) for i in range(7))  # 0, 0.05, ..., 0.30


def _p_by_t_settings() -> tuple[Setting, ...]:
    # Cells on another ablation's line (t = 20, p = 0.2) reuse its runs: see run_folders.
    return tuple(Setting(f"p{p:.2f}-t{t:g}", "constrained",
                         {"constraint": "barrier", "p": p, "t": t}, axis="t", value=t,
                         group=f"p = {p:.2f}")
                 for p in (0.1, 0.2, 0.3) for t in (10.0, 20.0, 50.0))


def _build_ablations() -> dict[str, Ablation]:
    c = "constrained"
    abl = [
        Ablation("barrier-vs-l2",
                 "extended log-barrier vs image-level L2 penalty max(0, f_c)² over the margin p",
                 tuple(Setting(f"{kind}-p{p:.2f}", c, {"constraint": kind, "p": p}, axis="p",
                               value=p, group=kind)
                       for kind in ("barrier", "l2") for p in _p_grid())),
        Ablation("image-vs-pixel",
                 "image-level size constraint (log-barrier on f_c) vs pixel-level L1 expansion "
                 "loss mean(1 − a)",
                 (Setting("image-barrier", c, {"constraint": "barrier"}, axis="constraint",
                          value="barrier"),
                  Setting("pixel-l1", c, {"constraint": "pixel-l1"}, axis="constraint",
                          value="pixel-l1"))),
        Ablation("lambda", "weight λ of the constraint term",
                 tuple(Setting(f"lambda-{lam:g}", c, {"lam": lam}, axis="lam", value=lam)
                       for lam in (0.01, 0.1, 1.0, 10.0, 100.0))),
        Ablation("cam-stage", "encoder stage of the constrained Grad-CAM (1 = layer1)",
                 tuple(Setting(f"cam-stage-{s}", c, model={"cam_stage": s}, axis="cam_stage",
                               value=s) for s in (1, 2, 3, 4))),
        Ablation("t", "log-barrier parameter t",
                 tuple(Setting(f"t-{t:g}", c, {"t": t}, axis="t", value=t)
                       for t in (10.0, 15.0, 20.0, 25.0, 50.0))),
        Ablation("p-by-t", "margin p x barrier parameter t of the extended log-barrier",
                 _p_by_t_settings()),
        Ablation("latent", "size of the dense latent z (run it with several --slices central:N "
                 "for the paper's N slices x z table)",
                 tuple(Setting(f"latent-{z}", c, model={"latent_dim": z}, axis="latent_dim",
                               value=z) for z in (16, 32, 64, 128))),
        Ablation("recon", "reconstruction loss of the VAE term",
                 tuple(Setting(f"recon-{r}", c, {"recon": r}, axis="recon", value=r)
                       for r in ("bce", "l2", "ssim"))),
        Ablation("cam-weights",
                 "how the constrained attention is formed (gradient = the paper; "
                 "gradient-running-bn = trained through the running statistics it is shown with)",
                 tuple(Setting(f"cam-weights-{w}", c, model={"cam_weights": w},
                               axis="cam_weights", value=w) for w in CAM_WEIGHTS)),
        # The flips change only the map (and so the thresholds): each value trains the same
        # weights again (the same seed), so its runs compare maps of identical models.
        Ablation("map-flips",
                 "test-time flips of the map: 1 = one pass (the paper), 2 = with the left-right "
                 "mirror, 4 = the mean over all four flips",
                 tuple(Setting(f"map-flips-{f}", c, model={"map_flips": f}, axis="map_flips",
                               value=f) for f in MAP_FLIPS)),
        Ablation(HEALTHY_PERCENTILE_ABLATION,
                 "healthy-only threshold percentile p85-p99 (evaluation only: one trained model)",
                 (Setting("constrained", c),), evaluation_only=True),
    ]
    return {a.name: a for a in abl}


#: ``--ablation NAME`` choices.
ABLATIONS: dict[str, Ablation] = _build_ablations()


def ablation(name: str) -> Ablation:
    """Return the ablation ``name``; unknown names raise :class:`CavlogError` listing them."""
    if name not in ABLATIONS:
        raise CavlogError(f"--ablation {name!r} is unknown; available: {', '.join(ABLATIONS)}")
    return ABLATIONS[name]


def method_settings(spec: str | list[str] | tuple[str, ...]) -> tuple[Setting, ...]:
    """Table 1 rows for ``"all"`` or comma-separated method names (validated, order kept)."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        available = list_methods()
        names = [m for m in TABLE1_METHODS if m in available]
        names += [m for m in available if m not in names]
    known = list_methods()
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise CavlogError(f"--methods {spec!r}: unknown method(s) {unknown or '(none given)'}; "
                          f"available: all, {', '.join(known)}")
    if len(set(names)) != len(names):
        raise CavlogError(f"--methods {spec!r}: a method is listed twice")
    return tuple(Setting(n, n) for n in names)


def run_folders(settings: tuple[Setting, ...], base: RunConfig) -> dict[str, str]:
    """Map each setting's label to the folder that holds its runs.

    A setting whose configuration equals that of an earlier one (Table 1's ``constrained``
    first, then every trained ablation's settings in :data:`ABLATIONS` order) shares its folder,
    so the same model is never trained twice in one benchmark folder: the p x t cell at t = 20
    is ``barrier-vs-l2``'s run, the default of every ablation is the ``constrained`` run.
    """
    candidates = [Setting("constrained", "constrained")]
    candidates += [s for a in ABLATIONS.values() if not a.evaluation_only for s in a.settings]
    known = [(c.apply(base), c.label) for c in candidates]  # in order: the first match wins

    def folder(setting: Setting) -> str:
        cfg = setting.apply(base)
        return next((label for other, label in known if other == cfg), setting.label)

    return {s.label: folder(s) for s in settings}
