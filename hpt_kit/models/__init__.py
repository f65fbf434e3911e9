"""Layers, stems, trunk, heads and the HPT network."""
