"""Registers ``all-minilm-l6-v2`` through the ``hpt_kit`` entry point. Registration imports neither
torch nor the weights: the encoder is built only when a dataset or a policy needs it."""

from __future__ import annotations

import hpt_kit

NAME = "all-minilm-l6-v2"


def build():
    from hpt_kit_minilm.encoder import MiniLMEncoder

    return MiniLMEncoder.from_files()


@hpt_kit.hookimpl
def hpt_register_text_encoders(registry) -> None:
    registry.add(NAME, build)
