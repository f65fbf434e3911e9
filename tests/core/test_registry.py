"""Plugin discovery through real entry points, and isolation of broken plugins."""

import importlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

import hpt_kit
from hpt_kit.core.registry import load_registry
from tests.conftest import HPT_KIT

BROKEN = "raise ImportError('this plugin is broken on purpose')\n"
INVALID = textwrap.dedent(
    """
    import dataclasses
    import hpt_kit
    from tests.conftest import make_toy

    @hpt_kit.hookimpl
    def hpt_register_embodiments(registry):
        good = make_toy("fine-toy")
        registry.add(dataclasses.replace(good, name="bad-toy", action=hpt_kit.ActionSpec(2, (-1.0,), (1.0,), 10.0)))
        registry.add(dataclasses.replace(good, name="Bad Name"))
        registry.add(dataclasses.replace(good, name="mujoco-arm3"))
        registry.add(good)
    """
)


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """A folder on sys.path holding a distribution with a broken and an invalid plugin."""
    site = tmp_path / "site"
    dist = site / "hpt_kit_broken-0.0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hpt-kit-broken\nVersion: 0.0.1\n")
    (dist / "entry_points.txt").write_text(
        "[hpt_kit]\nbroken = broken_plugin\ninvalid = invalid_plugin\ntypo = typo_plugin\n"
    )
    (site / "typo_plugin.py").write_text(
        "import hpt_kit\n\n@hpt_kit.hookimpl\ndef hpt_register_embodiment(registry):\n    pass\n"
    )
    (site / "broken_plugin.py").write_text(BROKEN)
    (site / "invalid_plugin.py").write_text(INVALID)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return site


def test_broken_plugins_are_reported_and_the_others_load(plugin_site):
    registry = load_registry()
    errors = {(e.plugin, e.item): e.reason for e in registry.errors}
    assert "this plugin is broken on purpose" in errors[("broken", None)]
    assert "invalid hook implementation" in errors[("typo", None)] and "hpt_register_embodiment" in errors[("typo", None)]
    assert "action.low/high must have action.dim=2 entries" in errors[("invalid", "bad-toy")]
    assert "must be lowercase" in errors[("invalid", "Bad Name")]
    assert "duplicate embodiment name, already registered by plugin 'mujoco'" in errors[("invalid", "mujoco-arm3")]
    # The invalid plugin's valid embodiment and every other plugin still register.
    assert {"fine-toy", "mujoco-arm3", "mujoco-arm4"} <= set(registry.embodiments)
    assert registry.embodiments["fine-toy"].plugin.distribution == "hpt-kit-broken"
    assert "bad-toy" not in registry.embodiments


def test_unknown_embodiment_lists_known_and_explains_a_rejected_one(plugin_site):
    registry = load_registry()
    with pytest.raises(KeyError) as info:
        registry.embodiment("bad-toy")
    assert "known:" in str(info.value) and "mujoco-arm3" in str(info.value)
    assert "action.low/high" in str(info.value)


def test_disabled_plugins_are_skipped(plugin_site, monkeypatch):
    monkeypatch.setenv("HPT_KIT_DISABLE_PLUGINS", "broken,invalid,typo")
    registry = load_registry()
    assert registry.errors == []
    assert "fine-toy" not in registry.embodiments and "mujoco-arm3" in registry.embodiments


def test_cli_list_reports_plugin_errors(plugin_site):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), os.getcwd()])}
    out = subprocess.run([HPT_KIT, "list", "--json"], capture_output=True, text=True, env=env, check=True)
    listing = json.loads(out.stdout)
    names = {e["name"]: e for e in listing["embodiments"]}
    assert names["mujoco-arm3"]["distribution"] == "hpt-kit-mujoco" and names["mujoco-arm3"]["action_dim"] == 3
    assert names["mujoco-arm4"]["action_dim"] == 4 and "state" in names["mujoco-arm4"]["modalities"]
    assert {(e["plugin"], e["item"]) for e in listing["errors"]} >= {("broken", None), ("invalid", "bad-toy")}
    assert listing["heads"] == ["diffusion", "gmm", "mlp", "transformer-decoder"] and listing["stems"] == ["mlp", "resnet"]
    encoders = {e["name"]: e for e in listing["text_encoders"]}
    hash_ngram = encoders["hash-ngram"]
    assert (hash_ngram["distribution"], hash_ngram["plugin"]) == ("hpt-kit", "hpt_kit.models.builtins")
    text = subprocess.run([HPT_KIT, "list"], capture_output=True, text=True, env=env, check=True).stdout
    assert "plugin error" in text and "broken on purpose" in text


def test_builtins_register_through_the_hooks():
    registry = load_registry(load_entrypoints=False)
    assert set(registry.stems) == {"mlp", "resnet"} and set(registry.heads) == {"mlp", "transformer-decoder", "diffusion", "gmm"}
    assert set(registry.text_encoders) == {"hash-ngram"}
    assert registry.embodiments == {}
    assert [p.name for p in registry.plugins] == ["hpt_kit.models.builtins"]
    assert sys.modules["hpt_kit.models.builtins"].hpt_register_heads is not None


def test_every_hook_is_prefixed_documented_and_used():
    import inspect

    from hpt_kit import hookspecs

    specs = [f for name, f in vars(hookspecs).items() if inspect.isfunction(f) and hasattr(f, "hpt_kit_spec")]
    assert {f.__name__ for f in specs} == {
        "hpt_register_embodiments",
        "hpt_register_stems",
        "hpt_register_heads",
        "hpt_register_text_encoders",
        "hpt_register_importers",
        "hpt_register_exporters",
    }
    for f in specs:
        doc = inspect.getdoc(f) or ""
        assert f.__name__.startswith("hpt_") and "Called" in doc and "registry.add" in doc, f.__name__
        assert list(inspect.signature(f).parameters) == ["registry"]
    # Each hook has an implementation that registers something in a default installation.
    registry = load_registry()
    assert registry.stems and registry.heads and registry.text_encoders and registry.embodiments
    assert {"lerobot", "robomimic", "rlds"} <= set(registry.importers)
    assert {"lerobot"} <= set(registry.exporters)


def test_importers_register_by_format_name_and_bad_ones_are_reported():
    class Good:
        name = "toyformat"

        def detect(self, path):
            return False

        def describe(self, path):
            raise NotImplementedError

        def episodes(self, path, selection):
            return iter(())

    class NoEpisodes:
        name = "half"

        def detect(self, path):
            return False

        def describe(self, path):
            raise NotImplementedError

    class Formats:
        @staticmethod
        @hpt_kit.hookimpl
        def hpt_register_importers(registry):
            registry.add(Good())
            registry.add(NoEpisodes())
            registry.add(Good())

    registry = load_registry(load_entrypoints=False, extra_plugins=[("formats", Formats)])
    assert registry.importer("toyformat").name == "toyformat"
    reasons = {(e.item, e.reason.split(" (")[0]) for e in registry.errors if e.plugin == "formats"}
    assert reasons == {
        ("half", "an importer needs the methods detect, describe, episodes"),
        ("toyformat", "duplicate importer name, already registered by plugin 'formats'"),
    }
    with pytest.raises(KeyError, match="unknown dataset format 'nope'; known: toyformat"):
        registry.importer("nope")


def test_exporters_register_by_format_name_and_bad_ones_are_reported():
    class Good:
        name = "toyformat"

        def export(self, source, episodes, out, options):
            pass

    class NoExport:
        name = "half"

    class Formats:
        @staticmethod
        @hpt_kit.hookimpl
        def hpt_register_exporters(registry):
            registry.add(Good())
            registry.add(NoExport())
            registry.add(Good())

    registry = load_registry(load_entrypoints=False, extra_plugins=[("formats", Formats)])
    assert registry.exporter("toyformat").name == "toyformat"
    reasons = {(e.item, e.reason.split(" (")[0]) for e in registry.errors if e.plugin == "formats"}
    assert reasons == {
        ("half", "an exporter needs the methods export"),
        ("toyformat", "duplicate exporter name, already registered by plugin 'formats'"),
    }
    with pytest.raises(KeyError, match="unknown export format 'nope'; known: toyformat"):
        registry.exporter("nope")


def test_a_plugin_cannot_take_a_built_in_name():
    class Clash:
        @staticmethod
        @hpt_kit.hookimpl
        def hpt_register_stems(registry):
            registry.add("mlp", lambda *args: None)

    registry = load_registry(load_entrypoints=False, extra_plugins=[("clash", Clash)])
    from hpt_kit.models.builtins import Deferred
    from hpt_kit.models.stems import build_mlp_stem

    kept = registry.stems["mlp"]  # the kit's own (registered deferred), whatever the plugin order
    assert isinstance(kept, Deferred) and kept.target() is build_mlp_stem
    assert [(e.plugin, e.item, e.reason) for e in registry.errors] == [("clash", "mlp", "duplicate stem name")]
