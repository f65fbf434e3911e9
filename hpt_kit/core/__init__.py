"""The bottom floor: the embodiment spec, trunk presets, the plugin registry, typed config and
recipes, and language encoding. Nothing here imports torch."""
