"""FLAIR intensity thresholding (Meissen et al. 2021): the training-free baseline."""

from .method import FlairThreshold, equalize_in_mask

__all__ = ["FlairThreshold", "equalize_in_mask"]
