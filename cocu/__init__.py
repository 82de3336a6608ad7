"""cocu: Concept Curation (CoCu, NeurIPS 2023) for language-supervised semantic segmentation."""

__version__ = "0.1.0"
