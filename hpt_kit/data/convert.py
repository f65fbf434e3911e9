"""Turning an embodiment plugin's ``convert_dataset`` into a dataset on disk."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from hpt_kit.core.spec import (
    IMAGE,
    IMAGE_FEATURES,
    ConvertRequest,
    Embodiment,
    EmbodimentData,
    Episode,
    SpecError,
    converted_spec,
    validate_episode,
)
from hpt_kit.data.store import Dataset, write_dataset

if TYPE_CHECKING:
    from hpt_kit.core.registry import Registry


def dataset_root() -> Path:
    """Where datasets live unless a path is given: $HPT_KIT_DATA; else ``data/`` when the working
    directory is the kit's own checkout (where ``make demo`` puts them, so the README's tour finds
    them after ``source .venv/bin/activate``); else ~/.cache/hpt-kit/datasets."""
    from hpt_kit.core.checkout import in_kit_checkout

    env = os.environ.get("HPT_KIT_DATA")
    if env:
        return Path(env)
    cwd = Path.cwd()
    return cwd / "data" if in_kit_checkout(cwd) else Path.home() / ".cache" / "hpt-kit" / "datasets"


def default_dataset_path(name: str) -> Path:
    return dataset_root() / f"{name}.zarr"


def convert(
    embodiment: Embodiment,
    out: str | Path | None = None,
    episodes: int = 50,
    seed: int = 0,
    render: bool = False,
    overwrite: bool = False,
    on_episode: Callable[[int, int], None] | None = None,
    image_encoder: str | None = None,
    image_encoder_weights: str | None = "imagenet",
    image_encoder_resize: int = 0,
    registry: Registry | None = None,
    first: int = 0,
) -> Path:
    """Run the plugin's converter and store exactly ``episodes`` validated episodes at ``out``:
    episodes ``first`` .. ``first + episodes - 1`` of the sequence the seed gives (a unit of a
    parallel conversion, :mod:`hpt_kit.data.fanout`, converts such a range).

    ``image_encoder`` (a torchvision ResNet name, e.g. "resnet18") also encodes every rendered frame
    once with that network, frozen (weights ``image_encoder_weights``: "imagenet", "none" or a file;
    frames resized to ``image_encoder_resize`` if > 0), and stores the result as ``image_features``
    next to the frames. The stored spec then records the encoder (name, weights, sha256) and its
    ``resnet`` image stems read the features instead of the frames.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    path = Path(out) if out is not None else default_dataset_path(embodiment.name)
    if path.exists() and not overwrite:  # say whether the plugin still matches what is there
        check_dataset(embodiment, Dataset(path))
    request = ConvertRequest(episodes=episodes, seed=seed, render=render or bool(image_encoder), first=first)

    def counted():
        n = 0
        for ep in embodiment.convert_dataset(request):
            if n == episodes:
                raise SpecError(f"embodiment {embodiment.name!r}: convert_dataset gave more than {episodes} episodes")
            n += 1
            yield ep
        if n != episodes:
            raise SpecError(f"embodiment {embodiment.name!r}: asked for {episodes} episodes, convert_dataset gave {n}")
        if first and request.notes.get("first_episode") != first:
            raise SpecError(
                f"embodiment {embodiment.name!r}: its converter does not convert a range of episodes "
                "(ConvertRequest.first, which hpt_kit.rollout.collect_episodes honours); convert it without --workers"
            )

    spec: Embodiment | EmbodimentData = converted_spec(embodiment, request.render)  # an optional camera only if rendered
    notes = request.notes
    notes.setdefault("seed", seed)
    stream: Iterable[Episode] = counted()
    language = embodiment.observation.language
    if language is not None and language.encoder:  # instruction texts -> language, before frames are encoded
        from hpt_kit.core.language import instructions_for, with_language

        stream = with_language(embodiment.name, stream, instructions_for(language, registry), notes)
    if image_encoder:
        spec, stream = image_features(embodiment, stream, image_encoder, image_encoder_weights, image_encoder_resize)
    return write_dataset(path, spec, stream, notes=notes, overwrite=overwrite, on_episode=on_episode)


def check_dataset(embodiment: EmbodimentData, ds: Dataset) -> None:
    """Refuse a dataset converted before ``embodiment``'s plugin changed its data layout
    (:mod:`hpt_kit.core.drift`), naming each field. Imported datasets have no plugin and pass."""
    from hpt_kit.core.drift import check_drift

    if "import" in ds.notes:
        return
    check_drift(
        embodiment, ds.spec, f"dataset {ds.path}",
        f"convert it again: hpt-kit convert {embodiment.name} --overwrite --out {ds.path}",
    )


def image_features(
    embodiment: EmbodimentData, episodes: Iterable[Episode], arch: str, weights: str | None, resize: int
) -> tuple[EmbodimentData, Iterator[Episode]]:
    """The stored spec and episodes when frames are encoded at conversion or import (see
    :func:`convert`): every frame through a frozen ResNet once, the features stored beside them."""
    import torch

    from hpt_kit.core.spec import spec_from_dict
    from hpt_kit.models.stem_image import feature_spec, precomputed_stems
    from hpt_kit.models.vision import ResNetEncoder, encode_frames

    obs = embodiment.observation
    if obs.image is None:
        raise SpecError(f"embodiment {embodiment.name!r} has no camera images (observation.image) to encode")
    if obs.image_features is not None:
        raise SpecError(f"embodiment {embodiment.name!r} already yields image_features; it needs no encoder")
    encoder = ResNetEncoder(arch, weights, resize).eval().requires_grad_(False)
    features = feature_spec(encoder, obs.image.views, obs.image.height, obs.image.width)
    base = spec_from_dict(embodiment.to_dict())
    spec = dataclasses.replace(
        base,
        observation=dataclasses.replace(base.observation, image_features=features),
        stems=precomputed_stems(base.stems, features.encoder),
    )

    def encoded() -> Iterator[Episode]:
        for i, raw in enumerate(episodes):
            ep = validate_episode(embodiment, i, raw)  # errors about the frames name the plugin's fields
            yield {**ep, IMAGE_FEATURES: encode_frames(encoder, torch.from_numpy(ep[IMAGE])).numpy()}

    return spec, encoded()
