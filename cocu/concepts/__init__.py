"""Concept curation (method.md §1-4): vocabulary, neighbour search, archives, sampling, metrics."""
