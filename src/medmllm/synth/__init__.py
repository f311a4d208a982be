"""Synthetic data: procedural phantoms with inserted findings, and MiniRad (docs/minirad.md)."""
