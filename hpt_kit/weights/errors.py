"""The error every weights module raises, in a module of its own so that resolving a location
(``weights.locations``, used by ``import`` and ``data``) does not load torch."""

from __future__ import annotations


class CheckpointError(ValueError):
    """Weights that cannot be found, read or loaded; the message names the location and what is wrong."""
