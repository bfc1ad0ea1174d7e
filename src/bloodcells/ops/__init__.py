"""Batched image operations on tensors: transforms, augmentations, robustness shifts."""
