"""Concept curation (docs/method.md §1-6, §11): vocabulary, neighbour search, archives, sampling, metrics."""
