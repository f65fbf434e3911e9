"""RLDS / TFDS datasets (the Open X-Embodiment format) as an hpt-kit importer, without TensorFlow."""

from hpt_kit_rlds.importer import RldsImporter

__all__ = ["RldsImporter"]
