"""EDSR model, checkpoints and foreign-weight import."""
