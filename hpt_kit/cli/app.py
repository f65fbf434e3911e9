"""The typer app: one small module per command group, errors as one line on stderr."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console

app = typer.Typer(
    name="hpt-kit",
    help="Heterogeneous Pre-trained Transformers: embodiment plugins around one shared trunk.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True, markup=False)  # messages carry user text: never markup
_state = {"debug": False}
EXIT_ERROR = 1  # every error's exit status: bad options, bad input, failures (130 and 143: interrupted)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show info logs."),
) -> None:
    _state["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    from hpt_kit.cli import (
        bench,
        check,
        data,
        datasets,
        evaluate,
        experiment,
        hub,
        importing,
        inspect,
        listing,
        openx,
        report,
        scaffold,
        serve,
        training,
    )

    for module in (listing, scaffold, check, data, datasets, importing, openx, training, evaluate, serve, inspect, hub, bench, experiment, report):
        module.register(app)


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's input, reported in one line without a traceback."""
    from hpt_kit.client import ServerError
    from hpt_kit.core.exporter import ExportError
    from hpt_kit.core.importer import ImportSourceError
    from hpt_kit.core.lock import LockError
    from hpt_kit.core.recipe import RecipeError
    from hpt_kit.core.registry import UnknownNameError
    from hpt_kit.core.spec import SpecError
    from hpt_kit.data.store import DatasetError
    from hpt_kit.engine import UnitError
    from hpt_kit.models.hpt import ComponentError
    from hpt_kit.models.vision import EncoderWeightsError
    from hpt_kit.serve.fleet import ServeError
    from hpt_kit.train.loop import TrainingError
    from hpt_kit.weights.checkpoint import CheckpointError
    from hpt_kit.weights.hub import HubError
    from hpt_kit.weights.published import PublishedFormatError

    return (
        DatasetError,
        SpecError,
        HubError,
        PublishedFormatError,
        RecipeError,
        UnknownNameError,
        CheckpointError,
        EncoderWeightsError,
        ComponentError,
        ImportSourceError,
        ExportError,
        ServeError,
        ServerError,
        FileExistsError,
        LockError,
        UnitError,
        TrainingError,
    )


def _signals() -> None:
    """Ctrl-C raises KeyboardInterrupt as usual and is remembered, so that an error it causes on its
    way out (a plugin half imported, a reader cut off) still ends as "interrupted", exit 130. SIGTERM
    unwinds the same way (cleanup runs, locks are released) and exits 143. Both wait while torch or
    MuJoCo runs its first import, whose C++ would abort on the KeyboardInterrupt (see _preload.py)."""
    import signal

    from hpt_kit._preload import hold_signals_while_importing

    hold_signals_while_importing()

    def on_int(signum, frame):
        _state["interrupted"] = 130
        raise KeyboardInterrupt

    def on_term(signum, frame):
        _state["interrupted"] = 143
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_int)
    signal.signal(signal.SIGTERM, on_term)


def _interrupted() -> None:
    code = int(_state.get("interrupted") or 130)
    err_console.print("interrupted" if code == 130 else "terminated")
    sys.exit(code)


def main() -> None:
    _signals()
    _register()
    try:
        code = app(standalone_mode=False)  # returns the exit code of typer.Exit / Ctrl-C instead of raising
        if isinstance(code, int) and code:
            if code == 130:
                _interrupted()
            sys.exit(code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        _interrupted()
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
        if _state.get("interrupted"):
            _interrupted()  # the error is the interruption's doing
        if _state["debug"] and not _is_usage_error(exc):
            raise
        if _is_usage_error(exc) and not exc.format_message():  # a command group without its command: its help
            exc.show()
            sys.exit(EXIT_ERROR)
        _fail(_error_message(exc))


def _is_usage_error(exc: BaseException) -> bool:
    """click's usage errors (or those of the copy of click that typer vendors): a bad option or value."""
    return callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int)


def _error_message(exc: BaseException) -> str:
    """Every error in one form: what went wrong in one line; a bad option or value says where its
    help is; an error the kit did not expect names its type and how to see the traceback."""
    if _is_usage_error(exc):
        ctx = getattr(exc, "ctx", None)
        where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        return f"{exc.format_message()}{where}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, _expected_errors()):
        return str(exc)
    return f"{exc} ({type(exc).__name__}; hpt-kit --debug shows the traceback)"


def _fail(message: str) -> None:
    """One line on stderr, exit status 1: the one form of every error (Ctrl-C and SIGTERM aside)."""
    from rich.text import Text

    err_console.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)
    sys.exit(EXIT_ERROR)
