"""Every recipe key is read somewhere in the kit.

A key the schema accepts but nothing reads is silently ignored: the user sets it and nothing changes
(``[eval] episodes`` was, by ``hpt-kit eval``). The check is static, over the AST of ``hpt_kit/``
outside the schema modules, with a small flow-insensitive type inference so that ``.seed`` counts
as reading ``RunSection.seed`` only where the object is known to be a ``RunSection``: a parameter,
variable or class attribute annotated with a section type, a section's own field (``recipe.train``),
an element of a tuple of sections (``for entry in recipe.datasets``), a section's constructor,
``dataclasses.replace`` of one, ``parse_table``/``from_data`` of a section class, a call to a
function whose return annotation is a section, or an unannotated parameter that some call site
passes a section. Reads through plain dicts do not count (the checkpoint's stored recipe was read
that way, which is how ``hpt-kit eval`` came to ignore two of its keys): parse them into sections.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import typing
from dataclasses import dataclass

import pytest

from hpt_kit.core.config import is_key
from hpt_kit.core.recipe import Recipe
from hpt_kit.lab.experiment import ExperimentSection
from tests.conftest import ROOT

SCHEMA_MODULES = ("hpt_kit/core/recipe.py", "hpt_kit/core/config.py")  # validation reads do not count


@dataclass(frozen=True)
class Seq:
    """A tuple of sections (``tuple[DatasetEntry, ...]``)."""

    item: type


@dataclass(frozen=True)
class Fixed:
    """A fixed tuple of types, as returned by ``-> tuple[ExperimentSection, Recipe]``."""

    items: tuple


def sections(*roots: type) -> dict[str, type]:
    """Every dataclass reachable from the roots through their type hints, by class name."""
    found: dict[str, type] = {}
    todo = list(roots)
    while todo:
        cls = todo.pop()
        if cls.__name__ in found:
            continue
        found[cls.__name__] = cls
        for tp in hints(cls).values():
            inner = [tp, *typing.get_args(tp)]
            todo += [t for t in inner if dataclasses.is_dataclass(t)]
    return found


@functools.cache
def hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def field_type(cls: type, name: str, known: dict[str, type]) -> object:
    """The section type (by name, as ``known`` has it) or tuple of sections that a field holds."""
    tp = hints(cls).get(name)
    if dataclasses.is_dataclass(tp) and tp.__name__ in known:
        return known[tp.__name__]
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        return Seq(known[item.__name__]) if dataclasses.is_dataclass(item) and item.__name__ in known else None
    return None


def annotation_type(node: ast.expr | None, known: dict[str, type]) -> object:
    """A section type from an annotation: ``C``, ``C | None``, ``tuple[C, ...]``, ``tuple[C, D]``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        node = ast.parse(node.value, mode="eval").body
    if isinstance(node, ast.Name):
        return known.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return annotation_type(node.left, known) or annotation_type(node.right, known)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "tuple":
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if len(items) == 2 and isinstance(items[1], ast.Constant) and items[1].value is Ellipsis:
            item = annotation_type(items[0], known)
            return Seq(item) if isinstance(item, type) else None
        return Fixed(tuple(annotation_type(i, known) for i in items))
    return None


def _called_name(func: ast.expr) -> str | None:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


class Scan:
    """The inference over a set of modules; ``reads`` collects (class name, field) pairs.

    Names are typed per top-level definition, flow-insensitively. Unannotated parameters take the
    types of the arguments at the functions' call sites (``_train(recipe, ...)`` called with a
    ``Recipe``), so passes repeat until no parameter gains a type.
    """

    def __init__(self, known: dict[str, type], trees: list[ast.Module], declarations: list[ast.Module] = ()):
        self.known = known
        self.trees = trees
        self.reads: set[tuple[str, str]] = set()
        self.returns: dict[str, object] = {}
        self.class_attrs: dict[str, dict[str, object]] = {}
        self.defs: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {}
        self.params: dict[str, dict[str, set]] = {}
        for tree in [*trees, *declarations]:
            self._collect_declarations(tree)

    def _collect_declarations(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.defs.setdefault(node.name, []).append(node)
                tp = annotation_type(node.returns, self.known)
                if tp is not None:
                    self.returns[node.name] = tp
            elif isinstance(node, ast.ClassDef) and node.name not in self.known:
                self.class_attrs[node.name] = {
                    s.target.id: annotation_type(s.annotation, self.known)
                    for s in node.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                }

    def typeof(self, node: ast.expr, env: dict[str, set]) -> set:
        if isinstance(node, ast.Name):
            return set(env.get(node.id, ()))
        if isinstance(node, ast.Attribute):
            out = set()
            for t in self.typeof(node.value, env):
                if isinstance(t, type) and node.attr in hints(t):
                    out.add(field_type(t, node.attr, self.known))
                elif isinstance(t, str):  # ``self`` inside a class that declares the attribute
                    out.add(self.class_attrs.get(t, {}).get(node.attr))
            return out - {None}
        if isinstance(node, ast.Call):
            return self._call_type(node, env)
        if isinstance(node, ast.Subscript):
            return {t.item for t in self.typeof(node.value, env) if isinstance(t, Seq)}
        if isinstance(node, ast.IfExp):
            return self.typeof(node.body, env) | self.typeof(node.orelse, env)
        if isinstance(node, ast.BoolOp):
            return set().union(*(self.typeof(v, env) for v in node.values))
        return set()

    def _call_type(self, node: ast.Call, env: dict[str, set]) -> set:
        name = _called_name(node.func)
        if name in self.known:
            return {self.known[name]}
        if name == "replace" and node.args:
            return self.typeof(node.args[0], env)
        if name in ("parse_table", "from_data") and node.args and isinstance(node.args[0], ast.Name):
            return {self.known[node.args[0].id]} if node.args[0].id in self.known else set()
        return {self.returns[name]} if name in self.returns else set()

    def bind(self, target: ast.expr, types: set, env: dict[str, set]) -> bool:
        """Add ``types`` to the names in ``target``; whether anything changed."""
        if isinstance(target, ast.Name):
            before = len(env.setdefault(target.id, set()))
            env[target.id] |= types
            return len(env[target.id]) != before
        changed = False
        if isinstance(target, ast.Tuple):
            for i, elt in enumerate(target.elts):
                parts = {t.items[i] for t in types if isinstance(t, Fixed) and i < len(t.items)}
                changed |= self.bind(elt, parts - {None}, env)
        return changed

    def iterated(self, it: ast.expr, target: ast.expr, env: dict[str, set]) -> bool:
        """Bind a loop target: ``for x in seq`` and ``for i, x in enumerate(seq)``."""
        if isinstance(it, ast.Call) and _called_name(it.func) == "enumerate" and it.args:
            if isinstance(target, ast.Tuple) and len(target.elts) == 2:
                return self.iterated(it.args[0], target.elts[1], env)
        return self.bind(target, {t.item for t in self.typeof(it, env) if isinstance(t, Seq)}, env)

    def _binding(self, n: ast.AST, env: dict[str, set]) -> bool:
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            changed = False
            from_calls = self.params.get(getattr(n, "name", ""), {})
            for a in [*n.args.posonlyargs, *n.args.args, *n.args.kwonlyargs]:
                declared = {annotation_type(a.annotation, self.known)} - {None}
                changed |= self.bind(ast.Name(a.arg), declared | from_calls.get(a.arg, set()), env)
            return changed
        if isinstance(n, ast.Assign):
            if isinstance(n.value, ast.Tuple):  # a, b = x.train, x.run.seed
                pairs = [zip(t.elts, n.value.elts) for t in n.targets if isinstance(t, ast.Tuple)]
                return any([self.bind(t, self.typeof(v, env), env) for p in pairs for t, v in p])
            types = self.typeof(n.value, env)
            return any([self.bind(t, types, env) for t in n.targets])
        if isinstance(n, ast.AnnAssign):
            types = self.typeof(n.value, env) if n.value else set()
            return self.bind(n.target, types | ({annotation_type(n.annotation, self.known)} - {None}), env)
        if isinstance(n, ast.NamedExpr):
            return self.bind(n.target, self.typeof(n.value, env), env)
        if isinstance(n, ast.For | ast.comprehension):
            return self.iterated(n.iter, n.target, env)
        return False

    def _pass_arguments(self, call: ast.Call, env: dict[str, set]) -> bool:
        """Give the called function's parameters the types of this call's arguments."""
        changed = False
        for fn in self.defs.get(_called_name(call.func), ()):
            names = [a.arg for a in [*fn.args.posonlyargs, *fn.args.args]]
            if names and names[0] in ("self", "cls") and isinstance(call.func, ast.Attribute):
                names = names[1:]
            pairs = [*zip(names, call.args), *((k.arg, k.value) for k in call.keywords if k.arg)]
            params = self.params.setdefault(fn.name, {})
            for name, value in pairs:
                before = len(params.setdefault(name, set()))
                params[name] |= self.typeof(value, env)
                changed |= len(params[name]) != before
        return changed

    def scope(self, root: ast.AST, owner: str | None) -> bool:
        """Type the names in one top-level definition, record its reads and pass its argument types
        on; whether any parameter anywhere gained a type."""
        env: dict[str, set] = {"self": {owner}} if owner else {}
        nodes = list(ast.walk(root))
        while any([self._binding(n, env) for n in nodes]):  # to a fixed point: bindings depend on each other
            pass
        for n in nodes:
            if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load):
                for t in self.typeof(n.value, env):
                    if isinstance(t, type) and n.attr in hints(t):
                        self.reads.add((t.__name__, n.attr))
        return any([self._pass_arguments(n, env) for n in nodes if isinstance(n, ast.Call)])

    def run(self) -> set[tuple[str, str]]:
        for _ in range(20):
            changed = False
            for tree in self.trees:
                for top in tree.body:
                    if isinstance(top, ast.ClassDef):
                        if top.name in self.known:
                            continue  # the schema's own validation is not a use
                        changed |= any([self.scope(member, top.name) for member in top.body])
                    else:
                        changed |= self.scope(top, None)
            if not changed:
                return self.reads
        raise AssertionError("the type inference did not settle")


def unread(known: dict[str, type], sources: dict[str, str], declarations: dict[str, str] | None = None) -> list[str]:
    """``Class.field`` for every key that no module of ``sources`` reads (``declarations``: modules
    whose return annotations count, such as ``load_recipe -> Recipe``, but whose reads do not). A
    field holding a section counts as read when any key inside it is (``[eval]`` is read where its
    settings are)."""
    parsed = [ast.parse(text, name) for name, text in (declarations or {}).items()]
    reads = Scan(known, [ast.parse(text, name) for name, text in sources.items()], parsed).run()

    def is_read(cls: type, name: str) -> bool:
        if (cls.__name__, name) in reads:
            return True
        inner = field_type(cls, name, known)
        inner = inner.item if isinstance(inner, Seq) else inner
        return isinstance(inner, type) and any(is_read(inner, f.name) for f in dataclasses.fields(inner) if is_key(f))

    return sorted(
        f"{cls.__name__}.{f.name}" for cls in known.values() for f in dataclasses.fields(cls) if is_key(f) and not is_read(cls, f.name)
    )


def kit_sources() -> dict[str, str]:
    """The kit's modules outside the schema (the scaffold's template is not Python until rendered)."""
    paths = [p.relative_to(ROOT) for p in sorted((ROOT / "hpt_kit").rglob("*.py"))]
    skip = [p for p in paths if str(p) in SCHEMA_MODULES or p.parts[:3] == ("hpt_kit", "scaffold", "template")]
    return {str(p): (ROOT / p).read_text() for p in paths if p not in skip}


def schema_sources() -> dict[str, str]:
    return {name: (ROOT / name).read_text() for name in SCHEMA_MODULES}


def test_every_recipe_key_is_read_by_the_kit():
    from hpt_kit.lab.scaling import ScalingSection

    known = sections(Recipe, ExperimentSection, ScalingSection)
    assert {"RunSection", "TrunkSection", "DatasetEntry", "TrainSection", "TransferSection", "EvalSection",
            "Target"} <= set(known)
    assert unread(known, kit_sources(), schema_sources()) == []


# The scan itself, on a synthetic schema: it must be able to fail.


@dataclass(frozen=True)
class Inner:
    used: int = 0
    unused: int = 0


@dataclass(frozen=True)
class Outer:
    items: tuple[Inner, ...] = ()
    inner: Inner = Inner()
    other: int = 0


SYNTHETIC = {"Outer": Outer, "Inner": Inner}


@pytest.mark.parametrize(
    "source, missing",
    [
        ("def f(o: Outer):\n    return o.other, o.inner.used, o.inner.unused\n", []),
        ("def f(o: Outer):\n    return o.other, o.inner.used\n", ["Inner.unused"]),
        # An attribute of the same name on an object of unknown type is not a read.
        ("def f(o: Outer, x):\n    return o.other, o.inner.used, x.unused\n", ["Inner.unused"]),
        ("def f(o: Outer):\n    return [i.used + i.unused for i in o.items], o.other\n", []),
        ("def f(o: Outer):\n    for n, i in enumerate(o.items):\n        print(i.unused)\n    return o.other\n", ["Inner.used"]),
        ("def make() -> Outer:\n    ...\n\ndef f():\n    o = make()\n    return o.other\n", ["Inner.unused", "Inner.used", "Outer.inner", "Outer.items"]),
        ("def f(o: Outer):\n    p = dataclasses.replace(o, other=1)\n    return p.inner.used, p.inner.unused\n", ["Outer.other"]),
        ("class Run:\n    outer: Outer\n\n    def go(self):\n        return self.outer.other, self.outer.inner\n", ["Inner.unused", "Inner.used", "Outer.items"]),
        # An unannotated parameter is typed by its callers.
        ("def g(o, n):\n    return o.other + n.used\n\ndef f(o: Outer):\n    return g(o, n=o.inner)\n", ["Inner.unused"]),
        ("class R:\n    def m(self, o):\n        return o.other\n\ndef f(o: Outer, r: R):\n    return r.m(o)\n", ["Inner.unused", "Inner.used", "Outer.inner", "Outer.items"]),
        # Keys looked up in a dict are not reads of the dataclass.
        ("def f(d: dict):\n    return d['other'], d.get('inner')\n", ["Inner.unused", "Inner.used", "Outer.inner", "Outer.items", "Outer.other"]),
        # Validation in the schema class itself is no use.
        ("@dataclass\nclass Outer:\n    def check(self):\n        return self.other\n", ["Inner.unused", "Inner.used", "Outer.inner", "Outer.items", "Outer.other"]),
    ],
)
def test_the_scan_reports_keys_nobody_reads(source, missing):
    assert unread(SYNTHETIC, {"m.py": source}) == missing


def test_the_schema_modules_are_exempt():
    """``parse_recipe`` reads ``DatasetEntry.embodiment`` for its duplicate check: a read that alone
    would make the key count, so the schema modules stay out of the scan."""
    text = (ROOT / SCHEMA_MODULES[0]).read_text()
    assert "DatasetEntry.embodiment" not in unread(sections(Recipe), {SCHEMA_MODULES[0]: text})
    kit = kit_sources()
    assert not set(SCHEMA_MODULES) & set(kit) and "hpt_kit/cli/evaluate.py" in kit


def test_a_new_key_nobody_reads_fails_the_check():
    """Add a field to a real section (through a subclass) and the check names it."""

    @dataclass(frozen=True)
    class EvalWithExtra(sections(Recipe)["EvalSection"]):
        never_read_anywhere: int = 0

    known = {**sections(Recipe, ExperimentSection), "EvalSection": EvalWithExtra}
    assert unread(known, kit_sources(), schema_sources()) == ["EvalWithExtra.never_read_anywhere"]
