"""Trunk sizes: the paper's presets and custom shapes, as plain configuration (no torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TrunkConfig:
    embed_dim: int = 128
    num_blocks: int = 16
    num_heads: int = 8
    preset: str = "custom"

    def __post_init__(self) -> None:
        if self.embed_dim < 1 or self.num_blocks < 1 or self.num_heads < 1:
            raise ValueError(f"trunk sizes must be >= 1, got {self}")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"trunk embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


# Widths, depths and heads of the paper's trunks; parameter counts are tested in tests/models.
PRESETS: dict[str, TrunkConfig] = {
    "tiny": TrunkConfig(32, 2, 4, "tiny"),  # for tests and smoke runs, not from the paper
    "small": TrunkConfig(128, 16, 8, "small"),  # 3.2M
    "base": TrunkConfig(256, 16, 8, "base"),  # 12.6M
    "large": TrunkConfig(512, 16, 8, "large"),  # 50.5M
    "xlarge": TrunkConfig(768, 32, 16, "xlarge"),  # 226.9M
    "huge": TrunkConfig(1024, 80, 16, "huge"),  # 1.0B
}


def trunk_config(preset: str) -> TrunkConfig:
    if preset not in PRESETS:
        raise KeyError(f"unknown trunk preset {preset!r}; known: {', '.join(PRESETS)}")
    return PRESETS[preset]
