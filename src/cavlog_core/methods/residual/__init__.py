"""Reconstruction-residual baselines (map = |x − x̂| in the eroded brain).

:mod:`.method` holds the base and the AE / VAE, :mod:`.context` the Context AE / VAE,
:mod:`.bayesian` the Bayesian AE / VAE, :mod:`.nets` the deterministic network.
"""

from .bayesian import BayesianAE, BayesianAEOptions, BayesianOptions, BayesianVAE
from .context import ContextAE, ContextOptions, ContextVAE, blank_patches
from .method import AE, VAE, ResidualMethod, residual_map
from .nets import DeterministicResNetVAE

__all__ = [
    "AE",
    "VAE",
    "BayesianAE",
    "BayesianAEOptions",
    "BayesianOptions",
    "BayesianVAE",
    "ContextAE",
    "ContextOptions",
    "ContextVAE",
    "DeterministicResNetVAE",
    "ResidualMethod",
    "blank_patches",
    "residual_map",
]
