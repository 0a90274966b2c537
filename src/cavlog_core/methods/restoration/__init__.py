"""Restoration VAE (Chen et al., MedIA 2020): MAP restoration under the VAE prior, then residual."""

from .method import RestorationOptions, RestorationVAE, restore, total_variation

__all__ = ["RestorationOptions", "RestorationVAE", "restore", "total_variation"]
