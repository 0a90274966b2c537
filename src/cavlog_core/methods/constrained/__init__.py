"""The paper's method (BMVC 2021): :class:`ConstrainedVAE`, built on the Grad-CAM VAE.

Its objective (VAE loss + λ·ψ_t(f_c(a)), warm-up, t schedule) is in
:mod:`cavlog_core.methods.gradcam_vae.loss`, shared with the other attention methods.
"""

from .method import ConstrainedVAE

__all__ = ["ConstrainedVAE"]
