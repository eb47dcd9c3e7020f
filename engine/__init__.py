"""Firebreak: detect, classify and contain AI incidents in production."""

__version__ = "0.1.0"
