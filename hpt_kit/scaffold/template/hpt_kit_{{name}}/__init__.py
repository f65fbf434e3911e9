"""The {{embodiment}} embodiment for hpt-kit; the plugin lives in ``hpt_kit_{{name}}.plugin``."""
