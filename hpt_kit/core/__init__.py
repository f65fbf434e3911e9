"""The bottom floor: the embodiment spec, the trunk presets, the registry, recipes and language."""
