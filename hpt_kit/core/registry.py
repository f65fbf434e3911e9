"""Plugin discovery and the registries built from it.

``make_plugin_manager`` loads the entry points of group ``hpt_kit`` one by one, so a plugin that fails
to import is recorded and skipped. ``load_registry`` then calls each plugin's hooks with a registrar
scoped to that plugin, so every error names the plugin it came from.

Environment:
    HPT_KIT_DISABLE_PLUGINS  comma-separated entry-point names to skip
    HPT_KIT_TRACE_PLUGINS    set to 1 to log every hook call
    HPT_KIT_NO_ENTRYPOINTS   set to 1 to load only the built-in plugins
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from hpt_kit import hookspecs
from hpt_kit.core.exporter import EXPORTER_MEMBERS
from hpt_kit.core.importer import IMPORTER_MEMBERS
from hpt_kit.core.spec import NAME_PATTERN, Embodiment, missing_members, spec_problems

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hpt_kit"
# Loaded by name, like entry points: the built-ins are plugins (they live with the models they register).
BUILTIN_PLUGINS = ("hpt_kit.models.builtins",)


class UnknownNameError(KeyError):
    """A name (embodiment, stem, head) nobody registered; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class PluginError:
    plugin: str
    reason: str
    item: str | None = None  # the embodiment/stem/head/text encoder name, when the error is about one

    def __str__(self) -> str:
        what = f" ({self.item})" if self.item else ""
        return f"plugin {self.plugin!r}{what}: {self.reason}"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str
    version: str


@dataclass(frozen=True)
class RegisteredEmbodiment:
    embodiment: Embodiment
    plugin: PluginInfo


@dataclass(frozen=True)
class RegisteredTextEncoder:
    builder: Callable[[], Any]
    plugin: PluginInfo


@dataclass(frozen=True)
class RegisteredImporter:
    importer: Any
    plugin: PluginInfo


@dataclass(frozen=True)
class RegisteredExporter:
    exporter: Any
    plugin: PluginInfo


@dataclass
class Registry:
    """Everything the installed plugins registered, plus everything that went wrong."""

    embodiments: dict[str, RegisteredEmbodiment] = field(default_factory=dict)
    stems: dict[str, Callable[..., Any]] = field(default_factory=dict)
    heads: dict[str, Callable[..., Any]] = field(default_factory=dict)
    text_encoders: dict[str, RegisteredTextEncoder] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    errors: list[PluginError] = field(default_factory=list)
    owners: dict[tuple[str, str], str] = field(default_factory=dict)  # ("stem"|"head", name) -> plugin
    importers: dict[str, RegisteredImporter] = field(default_factory=dict)
    exporters: dict[str, RegisteredExporter] = field(default_factory=dict)

    def embodiment(self, name: str) -> Embodiment:
        if name not in self.embodiments:
            known = ", ".join(sorted(self.embodiments)) or "none installed"
            hint = ""
            broken = [e for e in self.errors if e.item == name]
            if broken:
                hint = f" ({broken[0]})"
            raise UnknownNameError(f"unknown embodiment {name!r}{hint}; known: {known}")
        return self.embodiments[name].embodiment

    def stem(self, kind: str) -> Callable[..., Any]:
        return _lookup(self.stems, kind, "stem")

    def head(self, kind: str) -> Callable[..., Any]:
        return _lookup(self.heads, kind, "head")

    def importer(self, name: str) -> Any:
        """The importer of format ``name``; an unknown one lists the installed formats."""
        if name not in self.importers:
            known = ", ".join(sorted(self.importers)) or "none installed (pip install the importer plugins)"
            raise UnknownNameError(f"unknown dataset format {name!r}; known: {known}")
        return self.importers[name].importer

    def exporter(self, name: str) -> Any:
        """The exporter of format ``name``; an unknown one lists the installed formats."""
        if name not in self.exporters:
            known = ", ".join(sorted(self.exporters)) or "none installed (pip install the exporter plugins)"
            raise UnknownNameError(f"unknown export format {name!r}; known: {known}")
        return self.exporters[name].exporter

    def owner(self, what: str, kind: str) -> str:
        """The plugin that registered the stem or head ``kind`` (``what`` is "stem" or "head")."""
        return self.owners.get((what, kind), "?")

    def text_encoder(self, name: str) -> Any:
        """A new instance of the text encoder registered as ``name``, checked against the hook's contract."""
        if name not in self.text_encoders:
            known = ", ".join(sorted(self.text_encoders)) or "none"
            raise UnknownNameError(
                f"unknown text encoder {name!r}; known: {known} (encoders with dependencies ship as plugins)"
            )
        registered = self.text_encoders[name]
        encoder = registered.builder()
        dim = getattr(encoder, "dim", None)
        methods = [m for m in ("sentence", "tokens") if not callable(getattr(encoder, m, None))]
        if not (isinstance(dim, int) and dim >= 1) or methods:
            raise TypeError(
                f"text encoder {name!r} of plugin {registered.plugin.name!r} must have an integer dim >= 1 "
                f"(got {dim!r}) and methods sentence and tokens (missing: {methods or 'none'})"
            )
        return encoder


def _lookup(table: dict[str, Callable[..., Any]], kind: str, what: str) -> Callable[..., Any]:
    if kind not in table:
        raise UnknownNameError(f"unknown {what} {kind!r}; known: {', '.join(sorted(table)) or 'none'}")
    return table[kind]


class _Registrar:
    """What every registrar shares: the registry it fills, the plugin it is scoped to, and errors
    recorded against that plugin (and the item) instead of raised."""

    def __init__(self, registry: Registry, plugin: PluginInfo):
        self._registry = registry
        self._plugin = plugin

    def _error(self, reason: str, item: object) -> None:
        err = PluginError(self._plugin.name, reason, item if isinstance(item, str) else None)
        log.warning("%s", err)
        self._registry.errors.append(err)


class EmbodimentRegistrar(_Registrar):
    """Handed to ``hpt_register_embodiments``; validates what one plugin adds."""

    def add(self, embodiment: Embodiment) -> None:
        name = getattr(embodiment, "name", None)
        problems = spec_problems(embodiment)
        if problems:
            self._error("invalid spec: " + "; ".join(problems), name)
            return
        taken = self._registry.embodiments.get(embodiment.name)
        if taken is not None:
            self._error(
                f"duplicate embodiment name, already registered by plugin {taken.plugin.name!r}",
                embodiment.name,
            )
            return
        self._registry.embodiments[embodiment.name] = RegisteredEmbodiment(embodiment, self._plugin)


class ComponentRegistrar:
    """Handed to ``hpt_register_stems``/``hpt_register_heads``; maps names to builders."""

    def __init__(self, table: dict[str, Callable[..., Any]], registry: Registry, plugin: PluginInfo, what: str):
        self._table = table
        self._registry = registry
        self._plugin = plugin
        self._what = what

    def add(self, name: str, builder: Callable[..., Any]) -> None:
        if not isinstance(name, str) or not name or not callable(builder):
            reason = f"a {self._what} needs a non-empty name and a callable builder"
        elif name in self._table:
            reason = f"duplicate {self._what} name"
        else:
            self._table[name] = builder
            self._registry.owners[(self._what, name)] = self._plugin.name
            return
        self._registry.errors.append(PluginError(self._plugin.name, reason, str(name)))


class TextEncoderRegistrar(_Registrar):
    """Handed to ``hpt_register_text_encoders``; names go into specs, so they follow embodiment names'
    rules."""

    def add(self, name: str, builder: Callable[[], Any]) -> None:
        taken = self._registry.text_encoders.get(name) if isinstance(name, str) else None
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            reason = "a text encoder's name must be lowercase letters, digits, '-' or '_', from a letter"
        elif not callable(builder):
            reason = "a text encoder needs a callable builder"
        elif taken is not None:
            reason = f"duplicate text encoder name, already registered by plugin {taken.plugin.name!r}"
        else:
            self._registry.text_encoders[name] = RegisteredTextEncoder(builder, self._plugin)
            return
        self._error(reason, str(name))


class _FormatRegistrar(_Registrar):
    """Importers and exporters: one per format, named by embodiment names' rules, with the methods of
    their protocol."""

    kind = ""
    members: tuple[str, ...] = ()

    def _table(self) -> dict[str, Any]:
        raise NotImplementedError

    def _entry(self, item: Any) -> Any:
        raise NotImplementedError

    def add(self, item: Any) -> None:
        name = getattr(item, "name", None)
        table = self._table()
        taken = table.get(name) if isinstance(name, str) else None
        missing = missing_members(item, self.members)
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            reason = f"an {self.kind}'s name must be lowercase letters, digits, '-' or '_', from a letter"
        elif missing:
            reason = f"an {self.kind} needs the methods {', '.join(self.members)} (missing: {', '.join(missing)})"
        elif taken is not None:
            reason = f"duplicate {self.kind} name, already registered by plugin {taken.plugin.name!r}"
        else:
            table[name] = self._entry(item)
            return
        self._error(reason, str(name))


class ImporterRegistrar(_FormatRegistrar):
    """Handed to ``hpt_register_importers``."""

    kind, members = "importer", IMPORTER_MEMBERS

    def _table(self) -> dict[str, Any]:
        return self._registry.importers

    def _entry(self, item: Any) -> Any:
        return RegisteredImporter(item, self._plugin)


class ExporterRegistrar(_FormatRegistrar):
    """Handed to ``hpt_register_exporters``."""

    kind, members = "exporter", EXPORTER_MEMBERS

    def _table(self) -> dict[str, Any]:
        return self._registry.exporters

    def _entry(self, item: Any) -> Any:
        return RegisteredExporter(item, self._plugin)


def _disabled() -> set[str]:
    raw = os.environ.get("HPT_KIT_DISABLE_PLUGINS", "")
    return {p.strip() for p in raw.split(",") if p.strip()}


@contextlib.contextmanager
def _interruptions_kept() -> Iterator[Callable[[], None]]:
    """Plugin code runs under this. Ctrl-C (and SIGTERM, where the process handles it) is delivered as
    usual and also remembered; the yielded check raises KeyboardInterrupt again if one arrived, so a
    plugin whose own error handling swallowed it (a bare ``except:`` around an import) cannot make the
    kit carry on, or blame that plugin, as if nothing had happened."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    seen: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def remember(signum, frame):
        seen.append(signum)
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)
        raise KeyboardInterrupt

    def check() -> None:
        if seen:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, remember)
    if callable(previous[signal.SIGTERM]):
        signal.signal(signal.SIGTERM, remember)
    try:
        yield check
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def make_plugin_manager(
    load_entrypoints: bool | None = None, extra_plugins: Iterable[tuple[str, object]] = ()
) -> tuple[pluggy.PluginManager, dict[str, PluginInfo], list[PluginError]]:
    """A fresh plugin manager with the built-ins, the installed entry points and ``extra_plugins``.

    Returns the manager, what is known about each registered plugin, and the import errors.
    """
    import importlib

    from hpt_kit.core.version import __version__

    if load_entrypoints is None:
        load_entrypoints = os.environ.get("HPT_KIT_NO_ENTRYPOINTS", "") != "1"
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    errors: list[PluginError] = []
    for modname in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(modname), name=modname)
        infos[modname] = PluginInfo(modname, "hpt-kit", __version__)
    disabled = _disabled()
    if load_entrypoints:
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in disabled or ep.name in infos:
                continue
            dist = ep.dist
            info = PluginInfo(ep.name, dist.name if dist else "?", dist.version if dist else "?")
            with _interruptions_kept() as interrupted:
                try:
                    plugin = ep.load()
                    pm.register(plugin, name=ep.name)
                except Exception as exc:  # noqa: BLE001 - any failure of third-party code is reported
                    interrupted()  # not the plugin's failure: the user's Ctrl-C, swallowed by it
                    errors.append(PluginError(ep.name, f"failed to load {ep.value!r}: {type(exc).__name__}: {exc}"))
                    continue
                interrupted()
            try:
                pm.check_pending()  # e.g. a misspelled hook name: this plugin is skipped, not all
            except pluggy.PluginValidationError as exc:
                pm.unregister(name=ep.name)
                errors.append(PluginError(ep.name, f"invalid hook implementation: {exc}"))
                continue
            infos[ep.name] = info
    for name, plugin in extra_plugins:
        pm.register(plugin, name=name)
        infos[name] = PluginInfo(name, getattr(plugin, "__name__", name), "local")
    pm.check_pending()
    return pm, infos, errors


def load_registry(
    load_entrypoints: bool | None = None,
    extra_plugins: Iterable[tuple[str, object]] = (),
    embodiments: bool = True,
    importers: bool = True,
) -> Registry:
    """Discover plugins and collect everything they register.

    ``embodiments=False`` collects only stems, heads and text encoders (enough to build a model and
    its policy from a checkpoint) and skips the embodiment hooks, which may import simulators.
    """
    pm, infos, import_errors = make_plugin_manager(load_entrypoints, extra_plugins)
    registry = Registry(plugins=list(infos.values()), errors=list(import_errors))
    trace = bool(os.environ.get("HPT_KIT_TRACE_PLUGINS"))
    hooks = [
        ("hpt_register_stems", lambda info: ComponentRegistrar(registry.stems, registry, info, "stem")),
        ("hpt_register_heads", lambda info: ComponentRegistrar(registry.heads, registry, info, "head")),
        ("hpt_register_text_encoders", lambda info: TextEncoderRegistrar(registry, info)),
    ]
    if importers:
        hooks.append(("hpt_register_importers", lambda info: ImporterRegistrar(registry, info)))
        hooks.append(("hpt_register_exporters", lambda info: ExporterRegistrar(registry, info)))
    if embodiments:
        hooks.append(("hpt_register_embodiments", lambda info: EmbodimentRegistrar(registry, info)))
    for hook_name, make in hooks:
        caller = getattr(pm.hook, hook_name)
        # Call each implementation on its own so one plugin's exception is attributed and contained.
        impls = list(reversed(caller.get_hookimpls()))  # pluggy's call order
        # Built-ins first: a plugin reusing a built-in name gets the duplicate-name error, not the kit.
        impls.sort(key=lambda impl: impl.plugin_name not in BUILTIN_PLUGINS)
        for impl in impls:
            info = infos[impl.plugin_name]
            if trace:
                log.warning("hpt-kit plugins: calling %s of %r (%s %s)", hook_name, info.name, info.distribution, info.version)
            with _interruptions_kept() as interrupted:
                try:
                    registrar = make(info)
                    impl.function(**{name: registrar for name in impl.argnames})
                except Exception as exc:  # noqa: BLE001
                    interrupted()
                    registry.errors.append(
                        PluginError(info.name, f"{hook_name} raised {type(exc).__name__}: {exc}")
                    )
                interrupted()
    return registry
