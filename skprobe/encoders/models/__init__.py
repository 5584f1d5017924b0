"""Architecture families: one module each, registering its variants on import."""
