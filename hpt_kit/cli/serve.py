"""``hpt-kit serve``: every embodiment of one or more checkpoints behind one websocket server."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from hpt_kit.cli.choose import Best, Choice, better_best, choice, describe


def serve_command(
    checkpoints: Annotated[list[str], typer.Argument(metavar="CHECKPOINT...", help="Run directories, checkpoints or hf:// locations sharing one trunk.")],
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 opens it to the network (set a token).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one, printed).")] = 8765,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    token: Annotated[str | None, typer.Option(help="Require this token from every client (default: $HPT_KIT_TOKEN).")] = None,
    batching: Annotated[bool, typer.Option(help="Batch concurrent robots' predictions through one trunk pass.")] = True,
    batch_window_ms: Annotated[float, typer.Option(min=0.0, help="How long a batch waits for more robots.")] = 0.5,
    max_batch: Annotated[int, typer.Option(min=1, help="Most predictions in one batch.")] = 64,
    idle_timeout: Annotated[float, typer.Option(min=0.1, help="Seconds after which a silent robot's state is dropped.")] = 300.0,
    max_message_mb: Annotated[float, typer.Option(min=0.01, help="Largest message accepted, in MiB.")] = 16.0,
    backend: Annotated[str, typer.Option(help="torch, or onnx (ONNX Runtime, CPU; one pass per embodiment in a batch), or onnx-int8 (int8 weights: faster, not exact), or openvino (OpenVINO, CPU, fp32; hpt-kit[openvino]).")] = "torch",
    max_robots: Annotated[
        int, typer.Option(min=1, help="Most live robot sessions on the server; a new robot beyond it is refused (existing ones keep acting).")
    ] = 256,
    max_robots_per_connection: Annotated[
        int, typer.Option(min=1, help="Most live robot sessions one connection may open.")
    ] = 32,
    best: Best = False,
    checkpoint: Choice = None,
    execute_steps: Annotated[
        list[str] | None,
        typer.Option(
            metavar="[NAME=]N",
            help="Chunk steps executed before re-planning (0 = the whole chunk): N for every embodiment, NAME=N for one "
            "(repeatable). Default: each run's recipe (eval.execute_steps).",
        ),
    ] = None,
    temporal_ensemble: Annotated[
        list[str] | None,
        typer.Option(
            "--temporal-ensemble",
            metavar="[NAME=]M",
            help="Predict every step and average the overlapping chunks with weights exp(-M*i), oldest first (ACT uses "
            "0.01); 0 = off: M for every embodiment, NAME=M for one (repeatable). Default: each run's recipe (eval.temporal_ensemble).",
        ),
    ] = None,
) -> None:
    """Serve trained policies to robots over the network: reset(robot, embodiment), act(robot, observation)."""
    import asyncio

    from hpt_kit.cli.output import console
    from hpt_kit.client import TOKEN_ENV
    from hpt_kit.core.registry import load_registry
    from hpt_kit.serve.fleet import Fleet
    from hpt_kit.serve.server import PolicyServer, ServerConfig
    from hpt_kit.weights.checkpoint import resolve_checkpoint

    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        console.print(f"warning: serving on {host} without a token: anyone who reaches the port can drive the policy", markup=False)
    chosen = choice(checkpoint, best)
    ckpts = [resolve_checkpoint(loc, chosen) for loc in checkpoints]  # a damaged latest is refused here, named
    fleet = Fleet.load([str(c.path) for c in ckpts], load_registry(embodiments=False), device, backend)
    _set_chunks(fleet, execute_steps or [], temporal_ensemble or [])
    config = ServerConfig(
        host, port, token, batching, batch_window_ms, max_batch, idle_timeout, int(max_message_mb * 2**20),
        max_robots, max_robots_per_connection,
    )
    server = PolicyServer(fleet, config)

    def ready(bound: int) -> None:
        for ckpt in ckpts:
            console.print(f"{describe(ckpt)}: {', '.join(ckpt.specs)}", markup=False, highlight=False, soft_wrap=True)
            if chosen is None and (warning := better_best(ckpt)):
                console.print(warning, markup=False, highlight=False, soft_wrap=True)
        for name, served in fleet.served.items():
            console.print(f"{name}: {served.chunk_mode()} (from the {served.chunks_from}); actions clipped to its action bounds",
                          markup=False, highlight=False, soft_wrap=True)
        names = ", ".join(fleet.served)
        auth = "token required" if token else "no token"
        console.print(f"serving {names} on ws://{host}:{bound} ({auth}); stop with Ctrl-C or SIGTERM", markup=False)

    asyncio.run(server.run(ready))


def _set_chunks(fleet, execute_steps: list[str], ensembles: list[str]) -> None:
    """``--execute-steps`` and ``--temporal-ensemble`` onto the fleet: a bare value for every
    embodiment, NAME=VALUE for one; an embodiment given either option gets that mode."""
    from hpt_kit.serve.fleet import ServeError

    chosen: dict[str, tuple[int | None, float | None]] = {}
    for values, option, kind in ((execute_steps, "--execute-steps", int), (ensembles, "--temporal-ensemble", float)):
        for given in values:
            name, _, value = given.rpartition("=")
            names = [name] if name else list(fleet.served)
            try:
                number = kind(value)
            except ValueError:
                raise typer.BadParameter(f"{given!r}: expected [NAME=]{'N' if kind is int else 'M'}", param_hint=option) from None
            for n in names:
                if n not in fleet.served:
                    raise typer.BadParameter(f"{given!r}: no embodiment {n!r} is served; served: {', '.join(fleet.served)}", param_hint=option)
                steps, ensemble = chosen.get(n, (None, None))
                chosen[n] = (number, ensemble) if kind is int else (steps, number or None)  # m = 0: off
    for name, (steps, ensemble) in chosen.items():
        try:
            fleet.set_chunks(name, steps, ensemble)
        except ServeError as exc:
            raise typer.BadParameter(str(exc), param_hint="--execute-steps/--temporal-ensemble") from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
