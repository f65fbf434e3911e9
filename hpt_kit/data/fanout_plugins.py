"""Imported by the fork server of a local pool of work units (:mod:`hpt_kit.data.fanout`): every
plugin is loaded once there, so each worker forked from it starts with them loaded instead of
loading them again (seconds per worker with the simulators)."""

from hpt_kit.data.fanout import _registry

_registry()
