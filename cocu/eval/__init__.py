"""Zero-shot segmentation evaluation (docs/protocol.md): protocol cards (`config`, `protocol`), benchmark
readers and converters (`readers`, `converters`), GroupViT inference (`segmenter`), metrics with
detectron2's evaluator contract (`metrics`), demo overlays (`overlay`) and the per-benchmark loop
(`runner`)."""
