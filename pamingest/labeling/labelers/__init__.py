"""Shipped labellers, one module each: ``energy`` (band-limited energy detector) and ``birdnet``."""
