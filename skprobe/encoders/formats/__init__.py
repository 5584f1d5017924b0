"""Safe readers of checkpoint files: restricted torch pickles, TensorFlow bundles, CRC-32C."""
