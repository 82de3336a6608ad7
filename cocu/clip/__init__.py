"""The CLIP teacher: import a weights file or train the synthetic one, embed the corpus and the
vocabulary (docs/architecture.md).
"""
