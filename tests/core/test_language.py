"""The language modality: text encoders, instructions encoded at conversion and by the policy, and a
policy that tells tasks apart by their instruction alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import zarr

import hpt_kit
from hpt_kit.core.language import HashNgramEncoder, Instructions
from hpt_kit.core.registry import UnknownNameError, load_registry
from hpt_kit.core.spec import (
    ActionSpec,
    Embodiment,
    HeadSpec,
    LanguageSpec,
    ObservationSpec,
    RolloutRequest,
    RolloutResult,
    SpecError,
    StemSpec,
    spec_from_dict,
    spec_problems,
)
from hpt_kit.data.convert import convert
from hpt_kit.data.store import Dataset
from hpt_kit.models.hpt import HPT

INSTALLED = load_registry(embodiments=False)
TASKS = {"push the block to the left": -0.6, "push the block to the right": 0.6}
STEPS = 8


def target(text: str, state: np.ndarray) -> np.ndarray:
    """The expert: an offset the instruction chooses, plus a little of the state."""
    return (TASKS[text] + 0.3 * state[..., :1]).astype(np.float32)


def make_lang_toy(tokens: int = 1, channels: int = 64, encoder: str = "hash-ngram") -> Embodiment:
    """Two tasks with the same states and different actions: only the instruction tells them apart."""
    texts = list(TASKS)

    def convert_dataset(request):
        rng = np.random.default_rng(request.seed)
        for k in range(request.episodes):
            state = rng.uniform(-1, 1, size=(STEPS, 2)).astype(np.float32)
            yield {"state": state, "action": target(texts[k % 2], state), "instruction": texts[k % 2]}

    def rollout(controller, request):
        rng = np.random.default_rng(request.seed)
        successes, returns = [], []
        for k in range(request.episodes):
            text = texts[k % 2]
            controller.reset()
            errors = []
            for _ in range(STEPS):
                state = rng.uniform(-1, 1, size=2).astype(np.float32)
                action = controller.act({"state": state, "instruction": text})
                errors.append(float(np.abs(action - target(text, state)).max()))
            successes.append(max(errors) < 0.1)
            returns.append(-float(np.mean(errors)))
        return RolloutResult.from_episodes(successes, returns)

    return Embodiment(
        name="toy-lang",
        observation=ObservationSpec(state_dim=2, language=LanguageSpec(tokens, channels, encoder)),
        action=ActionSpec(dim=1, low=(-1.0,), high=(1.0,), control_hz=10.0),
        convert_dataset=convert_dataset,
        rollout=rollout,
        stems=(
            StemSpec("state", hidden=(32,), num_tokens=2, num_heads=4),
            StemSpec("language", hidden=(32,), num_tokens=2, num_heads=4),
        ),
        head=HeadSpec(hidden=(64,), action_horizon=1),  # states are drawn afresh every step
        max_episode_steps=STEPS,
    )


class LanguageToyPlugin:
    @staticmethod
    @hpt_kit.hookimpl
    def hpt_register_embodiments(registry):
        registry.add(make_lang_toy())


# -- text encoders --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(INSTALLED.text_encoders))
def test_every_installed_text_encoder_keeps_its_contract(name):
    encoder = INSTALLED.text_encoder(name)
    texts = list(TASKS) + ["open the drawer"]
    sentences = np.asarray(encoder.sentence(texts))
    assert sentences.shape == (3, encoder.dim) and np.isfinite(sentences).all()
    tokens = encoder.tokens(texts)
    assert len(tokens) == 3 and all(t.ndim == 2 and len(t) >= 1 and t.shape[1] == encoder.dim for t in tokens)
    # Two instructions, two embeddings; the same instruction again, the same embedding (to float
    # rounding: a batch of one and a padded batch of three take different matrix-product kernels).
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert np.abs(sentences[a] - sentences[b]).max() > 1e-3, (name, texts[a], texts[b])
    np.testing.assert_allclose(np.asarray(encoder.sentence(texts[:1]))[0], sentences[0], atol=1e-6)


def test_hash_ngram_separates_instructions_and_never_changes():
    enc = HashNgramEncoder()
    left, right, drawer = enc.sentence([*TASKS, "open the drawer"])
    assert np.linalg.norm(left) == pytest.approx(1.0, abs=1e-6)
    assert left @ right < 0.9 and left @ drawer < 0.5  # one word differs; nothing in common
    assert [len(t) for t in enc.tokens(["Push the block!", ""])] == [3, 1]  # words; no word -> one zero row
    np.testing.assert_array_equal(enc.tokens(["PUSH"])[0], enc.tokens(["push"])[0])
    # Stored datasets depend on these exact numbers: a change to the hashing must be deliberate.
    # "<open>": the word and its trigrams "<op", "ope", "pen", "en>", five signed features / sqrt(5).
    word = enc.sentence(["open"])[0]
    assert np.flatnonzero(word).tolist() == [22, 28, 32, 42, 48]
    np.testing.assert_allclose(
        word[[22, 28, 32, 42, 48]], np.array([1, -1, 1, -1, 1]) / np.sqrt(5), atol=1e-6
    )


def test_instructions_pool_or_pad_to_the_spec_and_encode_each_text_once():
    calls = []

    class Counting(HashNgramEncoder):
        def tokens(self, texts):
            calls.append(list(texts))
            return super().tokens(texts)

    text = "push the block to the left"  # six words
    short = Instructions(Counting(), LanguageSpec(8, 64, "hash-ngram"))
    rows = short(text)
    assert rows.shape == (8, 64)
    np.testing.assert_array_equal(rows[:6], HashNgramEncoder().tokens([text])[0])
    assert not rows[6:].any()  # zero padding, no mask
    assert short(text) is rows and calls == [[text]]  # cached: encoded once
    assert short.texts == [text] and short.index("open the drawer") == 1
    truncated = Instructions(HashNgramEncoder(), LanguageSpec(4, 64, "hash-ngram"))(text)
    np.testing.assert_array_equal(truncated, rows[:4])
    pooled = Instructions(HashNgramEncoder(), LanguageSpec(1, 64, "hash-ngram"))(text)
    np.testing.assert_array_equal(pooled, HashNgramEncoder().sentence([text]))
    with pytest.raises(SpecError, match="gives 64-d vectors but the language spec declares 32 channels"):
        Instructions(HashNgramEncoder(), LanguageSpec(1, 32, "hash-ngram"))


def test_text_encoder_registrar_validates_and_attributes_errors():
    class Bad:
        @staticmethod
        @hpt_kit.hookimpl
        def hpt_register_text_encoders(registry):
            registry.add("Bad Name", HashNgramEncoder)
            registry.add("no-builder", None)
            registry.add("broken", lambda: object())
            registry.add("fine", lambda: HashNgramEncoder(dim=16))
            registry.add("fine", HashNgramEncoder)

    registry = load_registry(load_entrypoints=False, extra_plugins=[("bad", Bad)])
    errors = {(e.plugin, e.item): e.reason for e in registry.errors}
    assert "must be lowercase" in errors[("bad", "Bad Name")]
    assert "callable builder" in errors[("bad", "no-builder")]
    assert "duplicate text encoder name, already registered by plugin 'bad'" in errors[("bad", "fine")]
    assert registry.text_encoders["hash-ngram"].plugin.name == "hpt_kit.models.builtins"
    assert registry.text_encoder("fine").dim == 16
    with pytest.raises(TypeError, match="'broken' of plugin 'bad' must have an integer dim"):
        registry.text_encoder("broken")
    with pytest.raises(
        UnknownNameError, match="unknown text encoder 'nope'; known: broken, fine, hash-ngram"
    ):
        registry.text_encoder("nope")


def test_the_language_spec_names_its_encoder_and_round_trips():
    emb = make_lang_toy(tokens=4)
    assert spec_problems(emb) == []
    data = spec_from_dict(emb.to_dict())
    assert data.observation.language == LanguageSpec(4, 64, "hash-ngram")
    older = {**emb.to_dict(), "observation": {"state_dim": 2, "language": {"tokens": 4, "channels": 8}}}
    assert spec_from_dict(older).observation.language == LanguageSpec(4, 8, encoder="")  # before encoders
    bad = dataclasses.replace(emb, observation=ObservationSpec(2, language=LanguageSpec(1, 64, "Hash Ngram")))
    assert any("must be a text encoder's name" in p for p in spec_problems(bad))


# -- conversion -----------------------------------------------------------------------------------


def test_conversion_encodes_instructions_into_the_zarr_store(tmp_path):
    emb = make_lang_toy(tokens=8)
    path = convert(emb, tmp_path / "toy-lang.zarr", episodes=5, seed=3)
    ds = Dataset(path)
    stored = zarr.open_group(store=str(path), mode="r", zarr_format=3)["language"]
    assert stored.shape == (5 * STEPS, 8, 64) and stored.dtype == np.float32
    texts = list(TASKS)
    assert ds.notes["instructions"] == texts and ds.notes["episode_instructions"] == [0, 1, 0, 1, 0]
    assert ds.notes["text_encoder"] == {
        "name": "hash-ngram",
        "plugin": "hpt_kit.models.builtins",
        "distribution": "hpt-kit",
        "version": hpt_kit.__version__,
    }
    for i in range(5):
        language = ds.episode(i)["language"]  # every step carries its episode's instruction
        expected = Instructions(HashNgramEncoder(), LanguageSpec(8, 64))(texts[i % 2])
        np.testing.assert_array_equal(language, np.broadcast_to(expected, language.shape))
    assert not np.array_equal(ds.episode(0)["language"][0], ds.episode(1)["language"][0])


def test_conversion_names_a_missing_instruction_and_an_unknown_encoder(tmp_path):
    emb = make_lang_toy()
    inner = emb.convert_dataset

    def forgetful(request):
        for i, ep in enumerate(inner(request)):
            yield {k: v for k, v in ep.items() if not (i == 1 and k == "instruction")}

    with pytest.raises(SpecError, match="episode 1: field 'instruction' must be a string"):
        convert(dataclasses.replace(emb, convert_dataset=forgetful), tmp_path / "a.zarr", episodes=3)
    assert not (tmp_path / "a.zarr").exists()

    def never(request):
        raise AssertionError("the converter must not run when the encoder is unknown")

    unknown = make_lang_toy(encoder="no-such-encoder")
    with pytest.raises(UnknownNameError, match="unknown text encoder 'no-such-encoder'; known: .*hash-ngram"):
        convert(dataclasses.replace(unknown, convert_dataset=never), tmp_path / "b.zarr", episodes=3)


# -- training and control -------------------------------------------------------------------------


def test_a_policy_tells_two_tasks_apart_by_their_instruction(tmp_path, one_thread):
    """Same states, two instructions, two different actions: trained a few hundred steps on the tiny
    trunk, the policy must give each instruction its own action (within 0.1; the tasks are 1.2 apart)."""
    from hpt_kit.core.recipe import parse_recipe
    from hpt_kit.policy import Policy
    from hpt_kit.train.loop import train
    from hpt_kit.weights.checkpoint import resolve_checkpoint

    registry = load_registry(load_entrypoints=False, extra_plugins=[("toy-lang", LanguageToyPlugin)])
    recipe = parse_recipe(
        {
            "trunk": {"preset": "tiny"},
            "datasets": [{"embodiment": "toy-lang", "episodes": 40}],
            "train": {
                "steps": 300,
                "batch_size": 32,
                "lr": 3e-3,
                "warmup_steps": 20,
                "val_every": 300,
                "checkpoint_every": 300,
                "log_every": 100,
                "val_fraction": 0.1,
            },
        },
        "test",
    )
    train(recipe, tmp_path / "run", registry)
    assert Dataset(tmp_path / "datasets" / "toy-lang.zarr").notes["instructions"] == list(TASKS)
    model = HPT.from_checkpoint(resolve_checkpoint(tmp_path / "run"), registry)
    assert model.specs["toy-lang"].observation.language.encoder == "hash-ngram"  # the checkpoint names it
    policy = Policy(model, "toy-lang", registry=registry)
    states = np.random.default_rng(7).uniform(-1, 1, size=(6, 2)).astype(np.float32)
    for text in TASKS:
        for state in states:
            policy.reset()
            action = policy.act({"state": state, "instruction": text})
            assert abs(float(action[0]) - float(target(text, state)[0])) < 0.1, (text, state, action)
    # The runner's path: instructions in the observation, every episode within tolerance.
    result = make_lang_toy().rollout(policy, RolloutRequest(episodes=4, seed=11))
    assert result.success_rate == 1.0, result
    with pytest.raises(KeyError, match="pass the task as observation\\['instruction'\\]"):
        policy.reset()
        policy.act({"state": states[0]})
