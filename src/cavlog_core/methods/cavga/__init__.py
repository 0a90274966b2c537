"""CAVGA_u (Venkataramanan et al., ECCV 2020): Grad-CAM VAE with pixel-level attention expansion."""

from .method import CAVGA

__all__ = ["CAVGA"]
