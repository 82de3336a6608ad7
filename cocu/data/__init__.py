"""Data: webdataset shards, the manifest, the synthetic world, and the segmentation benchmarks' readers
and label converters (docs/architecture.md).
"""
