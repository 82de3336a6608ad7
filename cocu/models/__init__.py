"""GroupViT: image and text towers, projectors and the contrastive loss (docs/architecture.md)."""
