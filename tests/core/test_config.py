"""The generic converter: plain data <-> frozen dataclasses, errors that name the key, TOML out."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from hpt_kit.core.config import NOT_A_KEY, ConfigError, from_data, read_toml, to_data, to_toml


@dataclass(frozen=True)
class Leaf:
    size: int
    scale: float = 1.0
    label: str = ""

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"size must be >= 0, got {self.size}")


@dataclass(frozen=True)
class Tree:
    leaves: tuple[Leaf, ...]
    widths: tuple[int, ...] = (1, 2)
    maybe: Leaf | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    on: bool = False
    note: str = field(default="", metadata=NOT_A_KEY)


def test_round_trip_through_plain_data():
    tree = Tree(leaves=(Leaf(1), Leaf(2, 0.5, "b")), maybe=Leaf(3), options={"k": [1, 2]}, on=True, note="x")
    data = to_data(tree)
    assert data == {
        "leaves": [{"size": 1, "scale": 1.0, "label": ""}, {"size": 2, "scale": 0.5, "label": "b"}],
        "widths": [1, 2],
        "maybe": {"size": 3, "scale": 1.0, "label": ""},
        "options": {"k": [1, 2]},
        "on": True,
    }  # lists, as JSON stores them; the field marked NOT_A_KEY is left out
    assert from_data(Tree, data) == Tree(leaves=tree.leaves, maybe=Leaf(3), options={"k": [1, 2]}, on=True)


def test_conversion_follows_the_type_hints():
    tree = from_data(Tree, {"leaves": [{"size": 1, "scale": 2}], "maybe": None, "widths": (3,)})
    assert tree.leaves == (Leaf(1, 2.0),) and isinstance(tree.leaves[0].scale, float)
    assert tree.maybe is None and tree.widths == (3,) and tree.options == {}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"leaves": [{"size": 1}], "colour": 1}, r"^colour: unknown key \(known: leaves, widths, maybe, options, on\)$"),
        ({"leaves": [{"size": 1}], "note": "x"}, r"^note: unknown key"),  # not a key, so not accepted either
        ({"leaves": [{}]}, r"^leaves\[0\]\.size: required key is missing$"),
        ({"leaves": [{"size": True}]}, r"^leaves\[0\]\.size: must be an integer, got True$"),
        ({"leaves": [{"size": 1.5}]}, r"must be an integer, got 1\.5"),
        ({"leaves": [{"size": 1, "scale": "big"}]}, r"^leaves\[0\]\.scale: must be a number, got 'big'$"),
        ({"leaves": [{"size": 1}], "on": 1}, r"^on: must be true or false, got 1$"),
        ({"leaves": {"size": 1}}, r"^leaves: expected a list"),
        ({"leaves": [], "maybe": 3}, r"^maybe: expected a table, got 3$"),
        ({"leaves": [{"size": -1}]}, r"^leaves\[0\]: size must be >= 0, got -1$"),  # __post_init__
        ({}, r"^leaves: required key is missing$"),
    ],
)
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_data(Tree, data)


def test_errors_carry_the_callers_prefix():
    with pytest.raises(ConfigError, match=r"^spec\.leaves\[0\]\.label: must be a string, got 3$"):
        from_data(Tree, {"leaves": [{"size": 1, "label": 3}]}, "spec")


def test_toml_writes_tables_then_arrays_of_tables(tmp_path):
    data = {
        "items": [{"name": "a", "opts": {"x": 1, "y": "z"}}, {"name": "b", "opts": {}}],
        "run": {"name": "r", "on": False, "ratio": 0.5, "sizes": [1, 2], "quote": 'say "hi"'},
        "empty": {},
    }
    text = to_toml(data)
    assert text.index("[run]") < text.index("[empty]") < text.index("[[items]]")
    path = tmp_path / "x.toml"
    path.write_text(text)
    assert read_toml(path) == data


def test_read_toml_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"no such config file"):
        read_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("a = [")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        read_toml(bad)
    assert tomllib.loads(to_toml({"t": {"v": 1e-5}})) == {"t": {"v": 1e-5}}
