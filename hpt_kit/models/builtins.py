"""The kit's own stems, heads and text encoder, registered through the hooks a third-party plugin uses."""

from __future__ import annotations

from hpt_kit.hookspecs import hookimpl


@hookimpl
def hpt_register_stems(registry) -> None:
    from hpt_kit.models.stem_image import build_resnet_stem
    from hpt_kit.models.stems import build_mlp_stem

    registry.add("mlp", build_mlp_stem)
    registry.add("resnet", build_resnet_stem)


@hookimpl
def hpt_register_heads(registry) -> None:
    from hpt_kit.models.head_decoder import build_decoder_head
    from hpt_kit.models.head_diffusion import build_diffusion_head
    from hpt_kit.models.head_gmm import build_gmm_head
    from hpt_kit.models.heads import build_mlp_head

    registry.add("mlp", build_mlp_head)
    registry.add("transformer-decoder", build_decoder_head)
    registry.add("diffusion", build_diffusion_head)
    registry.add("gmm", build_gmm_head)


@hookimpl
def hpt_register_text_encoders(registry) -> None:
    from hpt_kit.core.language import HashNgramEncoder

    registry.add("hash-ngram", HashNgramEncoder)
