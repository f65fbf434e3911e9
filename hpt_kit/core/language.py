"""Instructions as observations: text encoders, and the one place where text becomes ``language``.

A text encoder (registered through ``hpt_register_text_encoders``) maps texts to vectors; the kit
decides what is stored. :class:`Instructions` encodes for one :class:`LanguageSpec`: one pooled
vector per text when ``tokens == 1``, otherwise the per-token vectors, truncated to ``tokens`` rows
or padded with zero rows (there is no mask: the stem sees the padding as zero inputs). Conversion
(:func:`with_language`), the contract check and :class:`~hpt_kit.policy.Policy` all go through it,
so a policy sees at rollout exactly the numbers it was trained on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from hpt_kit.core.spec import ACTION, INSTRUCTION, LANGUAGE, STATE, Episode, LanguageSpec, SpecError

if TYPE_CHECKING:
    from hpt_kit.core.registry import Registry


class TextEncoder(Protocol):
    """What a builder registered through ``hpt_register_text_encoders`` returns."""

    dim: int  # width of every vector

    def sentence(self, texts: Sequence[str]) -> np.ndarray:
        """One pooled vector per text: (N, dim)."""
        ...

    def tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One vector per token of each text: a list of N arrays (n_i, dim), n_i >= 1."""
        ...


WORD = re.compile(r"\w+")


class HashNgramEncoder:
    """A deterministic text encoder with no weights and no dependency, for tests and as a baseline.

    A word is the sum of signed one-hot vectors, one per character trigram of ``<word>`` and one for
    the whole word, each placed by a blake2b hash (stable across processes, unlike ``hash``), then
    L2-normalised; a sentence is the normalised mean of its words. Words that share spellings get
    similar vectors and word order is ignored; meaning is not captured. Text is case-folded; a text
    without words is one zero vector.
    """

    def __init__(self, dim: int = 64, n: int = 3):
        assert dim >= 2 and n >= 1
        self.dim = dim
        self.n = n

    def _feature(self, gram: str) -> tuple[int, float]:
        h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")
        return h % self.dim, 1.0 if (h >> 63) & 1 else -1.0

    def _word(self, word: str) -> np.ndarray:
        marked = f"<{word}>"
        grams = [marked] + [marked[i : i + self.n] for i in range(max(1, len(marked) - self.n + 1))]
        v = np.zeros(self.dim, dtype=np.float64)
        for gram in grams:
            index, sign = self._feature(gram)
            v[index] += sign
        norm = np.linalg.norm(v)
        return v / norm if norm > 0 else v

    def tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = []
        for text in texts:
            words = WORD.findall(text.casefold())
            rows = [self._word(w) for w in words] or [np.zeros(self.dim)]
            out.append(np.stack(rows).astype(np.float32))  # (words, dim)
        return out

    def sentence(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for words in self.tokens(texts):
            mean = words.mean(0)
            norm = np.linalg.norm(mean)
            rows.append(mean / norm if norm > 0 else mean)
        return np.stack(rows).astype(np.float32)  # (N, dim)


class Instructions:
    """Texts -> (tokens, channels) float32 arrays for one :class:`LanguageSpec`, each distinct text
    encoded once. ``texts`` lists the distinct texts in the order they were first seen."""

    def __init__(self, encoder: TextEncoder, spec: LanguageSpec, about: Mapping[str, Any] | None = None):
        self.name = spec.encoder or type(encoder).__name__
        if encoder.dim != spec.channels:
            raise SpecError(
                f"text encoder {self.name!r} gives {encoder.dim}-d vectors but the language spec declares "
                f"{spec.channels} channels"
            )
        self.encoder = encoder
        self.spec = spec
        self.about = dict(about or {"name": self.name})  # provenance, stored in dataset notes
        self._cache: dict[str, np.ndarray] = {}
        self._index: dict[str, int] = {}

    @property
    def texts(self) -> list[str]:
        return list(self._index)

    def index(self, text: str) -> int:
        self(text)
        return self._index[text]

    def __call__(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"an instruction must be a string, got {type(text).__name__}")
        if text not in self._cache:
            self._cache[text] = self._encode(text)
            self._index[text] = len(self._index)
        return self._cache[text]

    def _encode(self, text: str) -> np.ndarray:
        tokens, dim = self.spec.tokens, self.spec.channels
        where = f"text encoder {self.name!r} on {text!r}"
        if tokens == 1:
            out = np.asarray(self.encoder.sentence([text]), dtype=np.float32)
            if out.shape != (1, dim):
                raise SpecError(f"{where}: sentence() gave shape {out.shape}, expected (1, {dim})")
        else:
            (seq,) = self.encoder.tokens([text])
            seq = np.asarray(seq, dtype=np.float32)
            if seq.ndim != 2 or seq.shape[1] != dim or len(seq) < 1:
                raise SpecError(f"{where}: tokens() gave shape {seq.shape}, expected (n >= 1, {dim})")
            out = np.zeros((tokens, dim), dtype=np.float32)  # zero rows pad short instructions
            n = min(tokens, len(seq))
            out[:n] = seq[:n]
        if not np.isfinite(out).all():
            raise SpecError(f"{where}: non-finite values")
        out.setflags(write=False)
        return out  # (tokens, channels)


def instructions_for(spec: LanguageSpec, registry: Registry | None = None) -> Instructions:
    """The :class:`Instructions` of a spec whose ``encoder`` names a registered text encoder."""
    from hpt_kit.core.registry import load_registry

    registry = registry if registry is not None else load_registry(embodiments=False)
    encoder = registry.text_encoder(spec.encoder)
    plugin = registry.text_encoders[spec.encoder].plugin
    about = {
        "name": spec.encoder,
        "plugin": plugin.name,
        "distribution": plugin.distribution,
        "version": plugin.version,
    }
    return Instructions(encoder, spec, about)


def with_language(
    embodiment: str, episodes: Iterable[Mapping[str, Any]], instructions: Instructions, notes: dict[str, Any]
) -> Iterator[Episode]:
    """Converter episodes carrying an ``instruction`` string -> episodes carrying ``language``
    (T, tokens, channels), the instruction's encoding repeated at every step.

    Once the episodes are exhausted, ``notes`` gets ``text_encoder`` (name and the plugin that
    registered it), ``instructions`` (the distinct texts, first seen first) and
    ``episode_instructions`` (each episode's index into them).
    """
    per_episode: list[int] = []
    for i, raw in enumerate(episodes):
        episode = dict(raw)
        text = episode.pop(INSTRUCTION, None)
        if not isinstance(text, str):
            raise SpecError(
                f"embodiment {embodiment!r}, episode {i}: field {INSTRUCTION!r} must be a string "
                f"(its language spec names text encoder {instructions.name!r}), got {type(text).__name__}"
            )
        if LANGUAGE in episode:
            raise SpecError(
                f"embodiment {embodiment!r}, episode {i}: give {INSTRUCTION!r} or {LANGUAGE!r}, not both "
                f"(the kit encodes the instruction with {instructions.name!r})"
            )
        steps = len(np.asarray(episode.get(ACTION, episode.get(STATE, ()))))
        encoded = instructions(text)
        episode[LANGUAGE] = np.broadcast_to(encoded, (steps, *encoded.shape))  # (T, tokens, channels)
        per_episode.append(instructions.index(text))
        yield episode
    notes.update(
        text_encoder=instructions.about, instructions=instructions.texts, episode_instructions=per_episode
    )
