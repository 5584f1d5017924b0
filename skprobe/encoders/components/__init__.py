"""Building blocks shared by several architectures: batched front ends, ViT blocks."""
