"""Helpers for tests and offline demos: tiny locally built models (no download, no GPU)."""
