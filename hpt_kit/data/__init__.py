"""Datasets: the zarr store, conversion, sampling."""
