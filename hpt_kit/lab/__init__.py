"""Measurements and studies built on training and the policy: ``bench`` and ``experiment``."""
