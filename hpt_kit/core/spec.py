"""The typed description of an embodiment: what it observes, how it acts, how its data is made and
how it is evaluated.

An embodiment plugin builds one :class:`Embodiment` per robot (or robot + task family) and hands it to
the kit through ``hpt_register_embodiments``. Everything a plugin declares is plain data except the
callables ``convert_dataset``, ``rollout`` and ``expert_rollout``; the data part
(:class:`EmbodimentData`, which :class:`Embodiment` extends) round-trips through JSON by the type
hints (:mod:`hpt_kit.core.config`) so that datasets and checkpoints carry the spec they were made with.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hpt_kit.core.config import NOT_A_KEY, OMIT_DEFAULT, ConfigError, from_data, to_data

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*([-_][a-z0-9]+)*$")

# Field names inside an episode and a dataset store.
STATE = "state"
ACTION = "action"
IMAGE = "image"
IMAGE_FEATURES = "image_features"
LANGUAGE = "language"
INSTRUCTION = "instruction"  # a converter's per-episode text, encoded into LANGUAGE by the kit

MODALITIES = (STATE, IMAGE, IMAGE_FEATURES, LANGUAGE)


class SpecError(ValueError):
    """A spec or an episode that does not satisfy the contract; the message says what to fix."""


@dataclass(frozen=True)
class ImageSpec:
    """Rendered camera frames, stored as uint8 (views, height, width, channels) per step."""

    views: tuple[str, ...]
    height: int
    width: int
    channels: int = 3


IMAGE_ENCODERS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")  # torchvision names


def check_arch(arch: str) -> None:
    """An image encoder name the kit can build (``hpt_kit.models.vision``), or a ValueError listing them."""
    if arch not in IMAGE_ENCODERS:
        raise ValueError(f"unknown image encoder {arch!r}; known: {', '.join(IMAGE_ENCODERS)}")


@dataclass(frozen=True)
class ImageEncoderSpec:
    """The frozen network that computed a dataset's ``image_features`` from its ``image`` frames.

    Recorded so that a policy trained on the features can compute the same ones from rendered frames
    at inference: it rebuilds the network from ``arch`` and ``weights`` and checks ``sha256``.
    """

    arch: str  # torchvision model name, e.g. "resnet18"
    weights: str  # "imagenet", "none" (a fixed seeded initialisation) or the absolute path of a weights file
    sha256: str  # digest of the encoder's tensors (names, dtypes, shapes, bytes)
    resize: int = 0  # frames resized to resize x resize before the encoder; 0 = as rendered


@dataclass(frozen=True)
class ImageFeatureSpec:
    """Precomputed image features per step: (views, tokens, channels), e.g. 49x512 for a ResNet-18 at
    224x224. ``encoder`` says which network made them, when the kit did (``convert --image-encoder``)."""

    views: tuple[str, ...]
    tokens: int
    channels: int
    encoder: ImageEncoderSpec | None = None


@dataclass(frozen=True)
class LanguageSpec:
    """Instruction embeddings per step: (tokens, channels).

    ``tokens == 1`` stores one pooled vector per instruction (per sentence); ``tokens > 1`` stores the
    encoder's per-token vectors, truncated to ``tokens`` or padded with zero vectors (no mask).
    ``encoder`` names a registered text encoder (``hpt_register_text_encoders``) whose output width is
    ``channels``: the converter then yields an ``instruction`` string per episode, the runner passes
    ``instruction`` in every observation, and the kit encodes both with that encoder. Empty: the
    converter yields ``language`` arrays and the runner passes ``language`` itself.
    """

    tokens: int
    channels: int
    encoder: str = ""


@dataclass(frozen=True)
class ObservationSpec:
    state_dim: int  # 0: the robot reports no proprioceptive state; its stems read images/language only
    image: ImageSpec | None = None
    image_features: ImageFeatureSpec | None = None
    language: LanguageSpec | None = None
    # A name per state value, as the source names its joints ("shoulder_pan.pos"); empty when unknown.
    state_names: tuple[str, ...] = field(default=(), metadata=OMIT_DEFAULT)

    def __post_init__(self) -> None:
        if self.state_names and len(self.state_names) != self.state_dim:
            raise ValueError(f"state_names: {len(self.state_names)} names for state_dim {self.state_dim}")

    def field_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-step shape of every observation field a converted episode carries."""
        shapes: dict[str, tuple[int, ...]] = {STATE: (self.state_dim,)}
        if self.image is not None:
            im = self.image
            shapes[IMAGE] = (len(im.views), im.height, im.width, im.channels)
        if self.image_features is not None:
            f = self.image_features
            shapes[IMAGE_FEATURES] = (len(f.views), f.tokens, f.channels)
        if self.language is not None:
            shapes[LANGUAGE] = (self.language.tokens, self.language.channels)
        return shapes

    def modalities(self) -> tuple[str, ...]:
        """Fields a stem can consume. A stem on ``image`` gets uint8 frames and must hold its own
        encoder (the ``resnet`` kind does); one on ``image_features`` gets precomputed features.
        ``state`` only when there is one: a state-free embodiment (``state_dim == 0``) still stores
        a (T, 0) ``state`` field, which no stem reads."""
        present = set(self.field_shapes()) - ({STATE} if self.state_dim == 0 else set())
        return tuple(m for m in MODALITIES if m in present)


@dataclass(frozen=True)
class ActionSpec:
    dim: int
    low: tuple[float, ...]
    high: tuple[float, ...]
    control_hz: float
    names: tuple[str, ...] = field(default=(), metadata=OMIT_DEFAULT)  # a name per action value, from the source

    def __post_init__(self) -> None:
        if self.names and len(self.names) != self.dim:
            raise ValueError(f"names: {len(self.names)} names for action dim {self.dim}")


@dataclass(frozen=True)
class StemSpec:
    """How one modality becomes tokens: a projector then cross-attention from learned latents."""

    modality: str
    kind: str = "mlp"
    hidden: tuple[int, ...] = (128,)  # projector widths before the cross-attention
    num_tokens: int = 16  # latent tokens the stem emits, whatever its input length
    num_heads: int = 8
    options: Mapping[str, Any] = field(default_factory=dict)  # kind-specific settings


@dataclass(frozen=True)
class HeadSpec:
    kind: str = "mlp"
    hidden: tuple[int, ...] = (256, 256)
    action_horizon: int = 4  # steps in the predicted action chunk
    loss: str = "huber"
    options: Mapping[str, Any] = field(default_factory=dict)  # kind-specific settings


@dataclass(frozen=True)
class ConvertRequest:
    """What ``convert_dataset`` is asked for. ``notes`` is for the plugin to fill with facts that are
    stored with the dataset (episodes dropped, simulator versions, expert success rate, ...)."""

    episodes: int
    seed: int
    render: bool = False
    notes: dict[str, Any] = field(default_factory=dict)
    # The index of the first episode asked for: episodes first .. first + episodes - 1 of what the
    # converter yields from 0, so that ranges convert in parallel (hpt_kit.rollout.collect_episodes
    # does it and notes ``first_episode``; a converter that cannot is run without --workers).
    first: int = 0


@dataclass(frozen=True)
class RolloutRequest:
    episodes: int
    seed: int
    video_dir: Path | None = None
    render: bool = False  # the controller consumes rendered images
    video_format: str = "mp4"  # "mp4" (H.264, needs PyAV) or "npz" (raw frames); see hpt_kit.video


@dataclass(frozen=True)
class RolloutResult:
    success_rate: float
    successes: tuple[bool, ...]
    returns: tuple[float, ...]
    episode_lengths: tuple[int, ...] = ()
    videos: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_episodes(
        cls,
        successes: list[bool],
        returns: list[float],
        lengths: list[int] | None = None,
        videos: list[str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> RolloutResult:
        rate = float(np.mean(successes)) if successes else 0.0
        return cls(
            success_rate=rate,
            successes=tuple(bool(s) for s in successes),
            returns=tuple(float(r) for r in returns),
            episode_lengths=tuple(int(n) for n in lengths or ()),
            videos=tuple(videos or ()),
            details=dict(details or {}),
        )


class Controller(Protocol):
    """What a rollout runner drives: one observation in, one action out, closed loop."""

    def reset(self) -> None: ...

    def act(self, observation: Mapping[str, np.ndarray]) -> np.ndarray: ...


class Stem(Protocol):
    """What a stem builder returns (a torch module): raw observations of one modality, (B, H,
    *input_shape), to (B, n, width) tokens. n is ``tokens_out`` when the stem has that attribute (an
    image stem: one set of tokens per camera view), else its ``StemSpec.num_tokens``."""

    def __call__(self, x: Any) -> Any: ...


class Head(Protocol):
    """What a head builder returns (a torch module) behind the trunk. ``features`` are the trunk's
    output tokens (B, L, width); ``actions`` are normalised to [-1, 1], (B, action_horizon, action_dim)."""

    def loss(self, features: Any, actions: Any) -> Any:
        """A scalar training loss."""
        ...

    def predict(self, features: Any) -> Any:
        """Normalised actions, (B, action_horizon, action_dim)."""
        ...


STEM_MEMBERS = ("__call__",)
HEAD_MEMBERS = ("loss", "predict")


def missing_members(obj: object, members: tuple[str, ...]) -> list[str]:
    """The protocol members ``obj`` lacks (not present or not callable)."""
    return [m for m in members if not callable(getattr(obj, m, None))]


Episode = dict[str, np.ndarray]
ConvertFn = Callable[[ConvertRequest], Iterator[Episode]]
RolloutFn = Callable[[Controller, RolloutRequest], RolloutResult]


@dataclass(frozen=True)
class EmbodimentData:
    """The data part of an embodiment: what datasets and checkpoints store (as :meth:`to_dict`) and
    what a network is built from. Read back with :func:`spec_from_dict`."""

    name: str
    observation: ObservationSpec
    action: ActionSpec
    stems: tuple[StemSpec, ...] = (StemSpec(STATE),)
    head: HeadSpec = HeadSpec()
    observation_horizon: int = 1  # past steps (current included) the stems see
    max_episode_steps: int = 0
    description: str = ""

    @property
    def action_horizon(self) -> int:
        return self.head.action_horizon

    def to_dict(self) -> dict[str, Any]:
        """The data part of the spec (no callables), JSON-ready."""
        return to_data(self)


@dataclass(frozen=True)
class Embodiment(EmbodimentData):
    """One robot as the kit sees it: the data of :class:`EmbodimentData` plus what makes its data and
    evaluates a policy.

    ``convert_dataset`` yields episodes as dicts of time-major arrays: ``state`` (T, state_dim),
    ``action`` (T, action dim) and any optional fields of the observation spec; the kit validates and
    stores them. ``rollout`` runs a :class:`Controller` for ``request.episodes`` episodes and reports
    the success rate. ``expert_rollout``, if given, runs the scripted expert the same way, for scale.
    ``rollout_envs``, if given, returns what ``rollout`` would run for a request without running it:
    an :class:`hpt_kit.rollout.RolloutEnvs` of picklable environment factories, so the kit can
    evaluate in worker processes, one simulator each, with one batched policy
    (``hpt-kit eval --workers``); it must give the same episodes as ``rollout``. Without it the kit
    evaluates through ``rollout``, serially.
    The callables are keyword-only (they follow the data's defaults) and never stored (``NOT_A_KEY``).
    """

    convert_dataset: ConvertFn = field(kw_only=True, metadata=NOT_A_KEY)
    rollout: RolloutFn = field(kw_only=True, metadata=NOT_A_KEY)
    expert_rollout: Callable[[RolloutRequest], RolloutResult] | None = field(
        default=None, kw_only=True, metadata=NOT_A_KEY
    )
    # The declared camera (observation.image) is rendered only when asked: convert_dataset yields
    # `image` exactly when ConvertRequest.render is set (rollouts: RolloutRequest.render). A dataset
    # converted without rendering stores the spec without the camera and without the stems reading it.
    camera_optional: bool = field(default=False, kw_only=True, metadata=NOT_A_KEY)
    rollout_envs: Callable[[RolloutRequest], Any] | None = field(default=None, kw_only=True, metadata=NOT_A_KEY)


def converted_spec(emb: EmbodimentData, render: bool) -> EmbodimentData:
    """The spec of what ``convert_dataset`` yields for a request with ``render``: the embodiment's own,
    or, for an optional camera not rendered, its data without ``observation.image`` and the stems on
    ``image`` (a :class:`SpecError` if no stem is left)."""
    if render or not getattr(emb, "camera_optional", False) or emb.observation.image is None:
        return emb
    base = spec_from_dict(emb.to_dict())
    stems = tuple(s for s in base.stems if s.modality != IMAGE)
    if not stems:
        raise SpecError(f"embodiment {emb.name!r}: without its optional camera no stem is left; add a state stem")
    return dataclasses.replace(base, observation=dataclasses.replace(base.observation, image=None), stems=stems)


def state_labels(obs: ObservationSpec) -> tuple[str, ...]:
    """A label per state value for tables and plots: the source's names, else ``state[i]``."""
    return obs.state_names or tuple(f"state[{i}]" for i in range(obs.state_dim))


def action_labels(action: ActionSpec) -> tuple[str, ...]:
    """A label per action value for tables and plots: the source's names, else ``action[i]``."""
    return action.names or tuple(f"action[{i}]" for i in range(action.dim))


def spec_to_dict(emb: EmbodimentData) -> dict[str, Any]:
    """The stored form of a spec (an :class:`Embodiment` loses its callables)."""
    return to_data(emb)


def spec_from_dict(d: Mapping[str, Any]) -> EmbodimentData:
    """A spec as stored in a dataset or checkpoint; keys added since it was written take their defaults."""
    try:
        return from_data(EmbodimentData, d, "spec")
    except ConfigError as exc:
        raise SpecError(str(exc)) from None


def validate_spec(emb: Embodiment) -> None:
    """Raise :class:`SpecError` naming the first field that breaks the contract."""
    problems = spec_problems(emb)
    if problems:
        raise SpecError("; ".join(problems))


def spec_problems(emb: Any) -> list[str]:
    if not isinstance(emb, Embodiment):
        return [f"expected an hpt_kit.Embodiment, got {type(emb).__name__}"]
    p: list[str] = []
    if not isinstance(emb.name, str) or not NAME_PATTERN.match(emb.name):
        p.append(
            f"name {emb.name!r} must be lowercase letters, digits, '-' or '_', starting with a letter"
        )
    obs, act = emb.observation, emb.action
    if not isinstance(obs, ObservationSpec):
        p.append("observation must be an ObservationSpec")
        return p
    if not isinstance(act, ActionSpec):
        p.append("action must be an ActionSpec")
        return p
    if obs.state_dim < 0:
        p.append(f"observation.state_dim must be >= 0 (0: no proprioceptive state), got {obs.state_dim}")
    for fname, shape in obs.field_shapes().items():
        if fname != STATE and any(int(s) < 1 for s in shape):
            p.append(f"observation.{fname} has a non-positive size in {shape}")
    encoder = obs.image_features.encoder if obs.image_features is not None else None
    if encoder is not None and not (
        isinstance(encoder, ImageEncoderSpec) and encoder.arch and encoder.weights and encoder.sha256
    ):
        p.append("observation.image_features.encoder must be an ImageEncoderSpec with arch, weights and sha256")
    encoder = obs.language.encoder if obs.language is not None else ""
    if encoder != "" and not (isinstance(encoder, str) and NAME_PATTERN.match(encoder)):
        p.append(f"observation.language.encoder {encoder!r} must be a text encoder's name or empty")
    if act.dim < 1:
        p.append(f"action.dim must be >= 1, got {act.dim}")
    if len(act.low) != act.dim or len(act.high) != act.dim:
        p.append(
            f"action.low/high must have action.dim={act.dim} entries, "
            f"got {len(act.low)} and {len(act.high)}"
        )
    elif not all(math.isfinite(lo) and math.isfinite(hi) and lo < hi for lo, hi in zip(act.low, act.high)):
        p.append("action bounds must be finite with low < high in every dimension")
    if not act.control_hz > 0:
        p.append(f"action.control_hz must be > 0, got {act.control_hz}")
    if not emb.stems:
        p.append("stems must name at least one modality")
    available = obs.modalities()
    seen: set[str] = set()
    for s in emb.stems:
        if s.modality not in available:
            p.append(f"stem for modality {s.modality!r} but the observation offers {list(available)}")
        if s.modality in seen:
            p.append(f"two stems for modality {s.modality!r}")
        seen.add(s.modality)
        if s.num_tokens < 1 or s.num_heads < 1 or any(h < 1 for h in s.hidden):
            p.append(f"stem {s.modality!r}: num_tokens, num_heads and hidden widths must be >= 1")
    if emb.head.action_horizon < 1:
        p.append(f"head.action_horizon must be >= 1, got {emb.head.action_horizon}")
    if emb.observation_horizon < 1:
        p.append(f"observation_horizon must be >= 1, got {emb.observation_horizon}")
    if not callable(emb.convert_dataset):
        p.append("convert_dataset must be callable")
    if not callable(emb.rollout):
        p.append("rollout must be callable")
    if emb.expert_rollout is not None and not callable(emb.expert_rollout):
        p.append("expert_rollout must be callable or None")
    if emb.camera_optional and obs.image is None:
        p.append("camera_optional is set but observation.image declares no camera")
    if emb.rollout_envs is not None and not callable(emb.rollout_envs):
        p.append("rollout_envs must be callable or None")
    return p


def episode_field_shapes(spec: EmbodimentData) -> dict[str, tuple[int, ...]]:
    """Per-step shape of every array an episode of this embodiment must carry."""
    shapes = spec.observation.field_shapes()
    shapes[ACTION] = (spec.action.dim,)
    return shapes


EPISODE_DTYPES = {IMAGE: np.uint8}  # everything else is float32


def validate_episode(spec: EmbodimentData, index: int, episode: Mapping[str, Any]) -> Episode:
    """Check one converted episode against the spec and return it with canonical dtypes.

    Errors name the embodiment, the episode index and the field.
    """
    where = f"embodiment {spec.name!r}, episode {index}"
    if not isinstance(episode, Mapping):
        raise SpecError(f"{where}: expected a dict of arrays, got {type(episode).__name__}")
    shapes = episode_field_shapes(spec)
    missing = sorted(set(shapes) - set(episode))
    extra = sorted(set(episode) - set(shapes))
    if missing:
        raise SpecError(f"{where}: missing field(s) {missing}")
    if extra:
        raise SpecError(f"{where}: field(s) {extra} are not declared in the observation spec")
    out: Episode = {}
    length = None
    for fname, step_shape in shapes.items():
        arr = np.asarray(episode[fname])
        if arr.ndim != len(step_shape) + 1 or tuple(arr.shape[1:]) != step_shape:
            raise SpecError(
                f"{where}, field {fname!r}: shape {tuple(arr.shape)}, expected (T, {', '.join(map(str, step_shape))})"
            )
        if length is None:
            length = arr.shape[0]
        elif arr.shape[0] != length:
            raise SpecError(f"{where}, field {fname!r}: {arr.shape[0]} steps, other fields have {length}")
        want = EPISODE_DTYPES.get(fname, np.float32)
        if want is np.uint8:
            if arr.dtype != np.uint8:
                raise SpecError(f"{where}, field {fname!r}: dtype {arr.dtype}, expected uint8")
        else:
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise SpecError(f"{where}, field {fname!r}: dtype {arr.dtype} is not numeric")
            arr = arr.astype(np.float32, copy=False)
            if not np.isfinite(arr).all():
                bad = int(np.argwhere(~np.isfinite(arr))[0][0])
                raise SpecError(f"{where}, field {fname!r}: non-finite value at step {bad}")
        out[fname] = arr
    if not length:
        raise SpecError(f"{where}: episode has no steps")
    return out
