"""Zero-shot segmentation evaluation (docs/protocol.md): protocol cards (`protocol`), GroupViT
inference (`segmenter`), metrics with detectron2's evaluator contract (`metrics`), demo overlays
(`overlay`), the per-benchmark loop (`runner`) and the `evaluate` stage's library (`evaluate`). The
benchmarks' files are read by `cocu.data.readers`."""
