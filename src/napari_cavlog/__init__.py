"""napari plugin for unsupervised brain-lesion segmentation (thin layer over ``cavlog_core``)."""

__version__ = "0.1.0"
