"""``hpt-kit eval``: roll a trained policy out in its embodiment's environment, or, for an embodiment
with no simulator (an imported dataset), measure its action error on the run's held-out episodes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hpt_kit.cli.choose import Best, Choice, better_best, choice, describe

if TYPE_CHECKING:
    from hpt_kit.core.recipe import EvalSection
    from hpt_kit.core.spec import Embodiment
    from hpt_kit.policy import Policy


class VideoFormat(StrEnum):
    mp4 = "mp4"
    npz = "npz"


class EvalBackend(StrEnum):
    torch = "torch"
    onnx = "onnx"
    onnx_int8 = "onnx-int8"
    openvino = "openvino"


def eval_command(
    location: Annotated[str, typer.Argument(metavar="RUN_DIR|CHECKPOINT", help="Run directory, checkpoint or hf://.")],
    embodiment: Annotated[str | None, typer.Option(help="Which of the checkpoint's embodiments (default: the first).")] = None,
    episodes: Annotated[
        int | None, typer.Option(min=1, help="Rollout episodes. Default: the run's recipe (eval.episodes), else 20.")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="First rollout seed (kept apart from conversion seeds). Default: the run's recipe (eval.seed), else 1000."),
    ] = None,
    execute_steps: Annotated[
        int | None,
        typer.Option(min=0, help="Chunk steps executed before re-planning (0 = all). Default: the run's recipe."),
    ] = None,
    temporal_ensemble: Annotated[
        float | None,
        typer.Option(
            "--temporal-ensemble",
            metavar="M",
            min=0.0,
            help="Predict every step and average overlapping chunks with weights exp(-M*i), oldest first "
            "(ACT uses 0.01); 0 = off. Excludes --execute-steps. Default: the run's recipe.",
        ),
    ] = None,
    video: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Write every episode's video (named by episode and outcome) and a contact sheet of their first frames here.",
        ),
    ] = None,
    video_format: Annotated[
        VideoFormat, typer.Option(help="mp4 (H.264) or npz (raw frames, no codec).")
    ] = VideoFormat.mp4,
    expert: Annotated[bool, typer.Option("--expert", help="Also roll out the scripted expert, for scale.")] = False,
    server: Annotated[
        str | None,
        typer.Option(metavar="URL", help="Act through a policy server (ws://HOST:PORT) instead of in-process; RUN_DIR may then be the URL."),
    ] = None,
    best: Best = False,
    checkpoint: Choice = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    replay: Annotated[
        int | None,
        typer.Option(
            metavar="EPISODE",
            min=0,
            help="Embodiments without a simulator: plot this episode's predicted against recorded actions (PNG, --plot) "
            "instead of the held-out table.",
        ),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(metavar="FILE.png", help="With --replay: where the plot goes (default replay-NAME-episodeNNN.png here).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes, one simulator each, driven by one policy batched over them. Default: the "
            "CPU cores (never more than the episodes); 1 = serial, in this process. Embodiments whose plugin "
            "gives no rollout_envs, and --server, run serially.",
        ),
    ] = None,
    batch: Annotated[
        bool,
        typer.Option(
            "--batch/--no-batch",
            help="With workers: predict all due chunks in one network call (default), or one call each, "
            "which is bit-identical to serial evaluation (batched float rounding can grow into different "
            "trajectories in contact-rich simulators).",
        ),
    ] = True,
    backend: Annotated[
        list[EvalBackend] | None,
        typer.Option(
            help="Run the policy on this backend: torch, onnx, onnx-int8 or openvino (the graph ones on the CPU). "
            "Repeated, each later one is compared with the first on the same episodes (success rates, paired) "
            "and on the run's held-out episodes (actions). Default torch.",
        ),
    ] = None,
) -> None:
    """Report the success rate of a checkpoint's policy (and optionally of the scripted expert)."""
    backends = list(dict.fromkeys(b.value for b in backend or [EvalBackend.torch]))
    chosen = choice(checkpoint, best)
    if chosen is not None:  # the folder itself from here on, also for --server's description
        from hpt_kit.weights.checkpoint import resolve_checkpoint

        location = str(resolve_checkpoint(location, chosen).path)
    if server is not None or location.startswith(("ws://", "wss://")):
        if execute_steps is not None or temporal_ensemble is not None:
            raise typer.BadParameter("the server decides chunk execution; drop it here", param_hint="--execute-steps")
        if backend:
            raise typer.BadParameter("the server decides the backend (serve --backend); drop it here", param_hint="--backend")
        _eval_server(location, server or location, embodiment, episodes, seed, (video, video_format.value), expert, as_json)
        return
    from hpt_kit.cli.output import console
    from hpt_kit.core.registry import load_registry
    from hpt_kit.models.hpt import HPT
    from hpt_kit.policy import Policy
    from hpt_kit.weights.checkpoint import resolve_checkpoint

    ckpt = resolve_checkpoint(location)
    console.print(f"evaluating {describe(ckpt)}", highlight=False, soft_wrap=True)
    if chosen is None and (warning := better_best(ckpt)) is not None:  # the latest, read by default
        console.print(warning, markup=False, highlight=False, soft_wrap=True)
    settings, sources = eval_settings(ckpt.description, episodes, seed, execute_steps, temporal_ensemble)
    registry = load_registry()
    name = embodiment or next(iter(ckpt.specs))
    imported = "import" in ckpt.description["embodiments"].get(name, {}).get("dataset", {}).get("notes", {})
    if name in registry.embodiments and name in ckpt.specs and not imported:  # before a raw shape error in the rollout
        _check_plugin(registry.embodiment(name), ckpt.specs[name], f"checkpoint {ckpt.path}")
    model = HPT.from_checkpoint(ckpt, registry)
    emb = None if imported and replay is not None else _simulator(registry, ckpt, name, imported)
    if emb is None:  # no simulator (an imported dataset): offline metrics
        if video is not None or expert:
            raise typer.BadParameter(f"embodiment {name!r} has no simulator: no videos, no expert", param_hint="--expert/--video")
        if backends != ["torch"]:
            raise typer.BadParameter(f"embodiment {name!r} has no simulator: its offline evaluation runs torch", param_hint="--backend")
        from hpt_kit.cli.eval_offline import offline

        offline(ckpt, model, name, as_json, replay, plot)
        return
    if replay is not None:
        raise typer.BadParameter(f"embodiment {name!r} has a simulator: evaluate it by rollouts (--replay is for data-only ones)", param_hint="--replay")
    ensemble = settings.temporal_ensemble
    policy = Policy(model, name, settings.execute_steps, ensemble=ensemble or None, backend=backends[0])
    if expert and emb.expert_rollout is None:
        raise typer.BadParameter(f"embodiment {name!r} has no scripted expert", param_hint="--expert")
    out = {
        "embodiment": name,
        "checkpoint": str(ckpt.path),
        "step": ckpt.step,
        "episodes": settings.episodes,
        "seed": settings.seed,
        "execute_steps": None if ensemble else policy.execute_steps,
        "temporal_ensemble": ensemble,
        "settings_from": sources,
        "backend": backends[0],
        **_rollouts(emb, policy, settings, (video, video_format.value), expert, (workers, batch)),
    }
    if len(backends) > 1:
        from hpt_kit.cli.eval_backends import compare_backends, print_comparison

        def roll_out(other: str) -> dict[str, Any]:
            again = Policy(model, name, settings.execute_steps, ensemble=ensemble or None, backend=other)
            return _rollouts(emb, again, settings, (None, video_format.value), False, (workers, batch))

        out["compared"] = compare_backends(out, backends, roll_out, model, name, ckpt.description)
    if as_json:
        typer.echo(json.dumps(out))
        return
    _print_table(out, ckpt.path.name + ("" if backends == ["torch"] else f", {backends[0]}"))
    if "compared" in out:
        from hpt_kit.cli.output import stdout_console

        print_comparison(out["compared"], stdout_console())


def _simulator(registry: Any, ckpt: Any, name: str, imported: bool) -> Embodiment | None:
    """The embodiment to roll out in: the plugin's, or the environment an imported dataset's source
    names (``hpt_kit.data.simulator``); None, with the reason printed for an imported dataset, when
    evaluation stays offline."""
    from hpt_kit.cli.output import console
    from hpt_kit.core.importer import NoEnvironment
    from hpt_kit.data.simulator import simulator

    if name in registry.embodiments:
        return registry.embodiment(name)
    if not imported or name not in ckpt.specs:
        return None
    notes = ckpt.description["embodiments"][name]["dataset"]["notes"]
    try:
        emb = simulator(registry, name, ckpt.specs[name], notes)
    except NoEnvironment as exc:
        console.print(f"{name}: no simulator to roll out in, so offline evaluation ({exc})", highlight=False, soft_wrap=True)
        return None
    console.print(f"{name}: rolling out in {emb.description}", highlight=False, soft_wrap=True)
    return emb


def _rollouts(
    emb: Embodiment,
    policy: Policy,
    settings: EvalSection,
    video: tuple[Path | None, str],
    expert: bool,
    parallel: tuple[int | None, bool] = (1, True),
) -> dict[str, Any]:
    """The policy's results, and the scripted expert's on the same episodes for scale when asked.
    ``video`` is the folder (None: no videos) and the format; ``parallel`` the worker processes
    (None: one per core) and whether their predictions are batched."""
    from hpt_kit.core.spec import RolloutRequest
    from hpt_kit.policy.parallel import evaluate

    folder, fmt = video
    request = RolloutRequest(
        episodes=settings.episodes, seed=settings.seed, video_dir=folder, render=policy.needs_images, video_format=fmt
    )
    workers, batch = parallel
    result, used = evaluate(emb, policy, request, workers, batch)
    out = {
        "workers": used,
        "batched": batch and used > 1,
        "success_rate": result.success_rate,
        "success_ci95": _wilson(result.successes),
        "successes": list(result.successes),
        "mean_return": _mean(result.returns),
        "episode_lengths": list(result.episode_lengths),
        "videos": list(result.videos),
        "details": dict(result.details),
    }
    if folder is not None and result.videos:
        out["contact_sheet"] = str(_contact_sheet(folder / f"{emb.name}-contact-sheet.png", result))
    if expert:
        ex = emb.expert_rollout(RolloutRequest(episodes=settings.episodes, seed=settings.seed))
        out["expert_success_rate"] = ex.success_rate
        out["expert_success_ci95"] = _wilson(ex.successes)
        out["expert_mean_return"] = _mean(ex.returns)
    return out


def _eval_server(
    location: str, url: str, embodiment: str | None, episodes: int | None, seed: int | None,
    video: tuple[Path | None, str], expert: bool, as_json: bool,
) -> None:
    """The rollouts with a :class:`~hpt_kit.client.PolicyClient` as the controller: the policy acts
    in the server's process, the simulator runs here."""
    from hpt_kit.client import PolicyClient
    from hpt_kit.core.registry import load_registry
    from hpt_kit.core.spec import spec_from_dict
    from hpt_kit.weights.checkpoint import resolve_checkpoint

    description = {} if location == url else resolve_checkpoint(location).description
    settings, sources = eval_settings(description, episodes, seed, None, None)
    with PolicyClient(url, embodiment) as client:
        served = client.metadata["embodiments"][client.embodiment]
        emb = _served_simulator(load_registry(), client.embodiment, served["checkpoint"] if location == url else location)
        if expert and emb.expert_rollout is None:
            raise typer.BadParameter(f"embodiment {client.embodiment!r} has no scripted expert", param_hint="--expert")
        _check_plugin(emb, spec_from_dict(served["spec"]), f"the checkpoint served at {url}")
        out = {
            "embodiment": client.embodiment,
            "server": url,
            "checkpoint": served["checkpoint"],
            "episodes": settings.episodes,
            "seed": settings.seed,
            # 0 is the whole chunk, as in-process evaluation reports it: the action horizon
            "execute_steps": None if served["temporal_ensemble"] else served["execute_steps"] or spec_from_dict(served["spec"]).action_horizon,
            "temporal_ensemble": served["temporal_ensemble"] or 0.0,
            "settings_from": sources,
            **_rollouts(emb, client, settings, video, expert),
        }
    if as_json:
        typer.echo(json.dumps(out))
        return
    _print_table(out, url)


def _served_simulator(registry: Any, name: str, location: str) -> Embodiment:
    """The simulator for a served embodiment: its plugin's, or for an imported dataset the environment
    its importer rebuilds from the checkpoint's copy of the dataset's notes (``location``: RUN_DIR, or
    the checkpoint path the server reports, read when it is on this machine)."""
    from hpt_kit.core.importer import NoEnvironment
    from hpt_kit.data.simulator import simulator
    from hpt_kit.weights.checkpoint import resolve_checkpoint

    if name in registry.embodiments:
        return registry.embodiment(name)
    if not Path(location).exists():
        raise typer.BadParameter(
            f"{name} is not a registered embodiment, and the served checkpoint {location} is not on this machine to "
            "say which simulator it needs; give its run directory: hpt-kit eval RUN_DIR --server URL", param_hint="--server")
    ckpt = resolve_checkpoint(location)
    if name not in ckpt.specs:
        registry.embodiment(name)  # the registry's error, listing the known names
    try:
        return simulator(registry, name, ckpt.specs[name], ckpt.description["embodiments"][name]["dataset"]["notes"])
    except NoEnvironment as exc:
        raise typer.BadParameter(f"{name}: no simulator to roll out in through a server ({exc})", param_hint="--server") from None


def _check_plugin(emb: Embodiment, stored: Any, where: str) -> None:
    """The installed plugin must still lay out observations and actions as the policy was trained on."""
    from hpt_kit.core.drift import check_drift

    check_drift(emb, stored, where, f"train again on a dataset converted with the current plugin (hpt-kit convert {emb.name} --overwrite)")


def _contact_sheet(path: Path, result: Any) -> Path:
    """The first frame of every episode's video (read back from the files, whichever plugin wrote
    them), framed by outcome when the result pairs its videos with episodes."""
    from hpt_kit.video import contact_sheet, read_frames

    firsts = [read_frames(Path(v), limit=1)[0] for v in result.videos]
    paired = len(result.successes) == len(result.videos)
    return contact_sheet(path, firsts, list(result.successes) if paired else [None] * len(firsts))


def _wilson(successes: tuple[bool, ...]) -> list[float]:
    """The Wilson 95% interval of a success rate, [low, high]."""
    from hpt_kit.core.stats import wilson_interval

    return list(wilson_interval(sum(successes), len(successes)))


def _mean(values: tuple[float, ...]) -> float | None:
    import numpy as np

    return float(np.mean(values)) if values else None


def eval_settings(
    description: Mapping[str, Any],
    episodes: int | None,
    seed: int | None,
    execute_steps: int | None,
    temporal_ensemble: float | None,
) -> tuple[EvalSection, dict[str, str]]:
    """The rollout settings and where each came from ("option", "recipe" or "default").

    An option given on the command line wins; otherwise the checkpoint's recipe ``[eval]`` section
    decides (a run's own plan for its evaluation), otherwise the section's defaults. The chunk mode
    is one setting: giving either of its options replaces the recipe's execute_steps and ensemble.
    """
    from hpt_kit.core.recipe import EvalSection, planned_eval

    stored = description.get("recipe", {}).get("eval", {})
    planned = planned_eval(description, "checkpoint recipe: eval")
    if execute_steps and temporal_ensemble:
        raise typer.BadParameter(
            "choose --execute-steps or --temporal-ensemble, not both", param_hint="--temporal-ensemble"
        )
    given = {"episodes": episodes, "seed": seed}
    chunks_given = execute_steps is not None or temporal_ensemble is not None
    settings = EvalSection(
        episodes=planned.episodes if episodes is None else episodes,
        seed=planned.seed if seed is None else seed,
        execute_steps=(execute_steps or 0) if chunks_given else planned.execute_steps,
        temporal_ensemble=(temporal_ensemble or 0.0) if chunks_given else planned.temporal_ensemble,
    )

    def source(given_here: bool, keys: tuple[str, ...]) -> str:
        return "option" if given_here else "recipe" if any(k in stored for k in keys) else "default"

    sources = {k: source(v is not None, (k,)) for k, v in given.items()}
    sources["chunks"] = source(chunks_given, ("execute_steps", "temporal_ensemble"))
    return settings, sources


def _print_table(out: Mapping[str, Any], checkpoint: str) -> None:
    """The human-readable report: settings and where they came from, then one row per policy."""
    from rich.table import Table

    from hpt_kit.cli.output import count, stdout_console

    ensemble, steps = out["temporal_ensemble"], out["execute_steps"]
    mode = f"temporal ensemble m={ensemble:g}" if ensemble else f"{steps} steps per chunk"
    table = Table(title=f"{out['embodiment']}: {count(out['episodes'], 'episode')} from seed {out['seed']}, {mode}")
    table.add_column("policy")
    table.add_column("success rate", justify="right")
    table.add_column("95% interval (Wilson)", justify="right")
    table.add_column("mean return", justify="right")
    table.add_row(f"HPT ({checkpoint})", f"{out['success_rate']:.1%}", _fmt_interval(out["success_ci95"]),
                  _fmt_return(out["mean_return"]))
    if "expert_success_rate" in out:
        table.add_row("scripted expert", f"{out['expert_success_rate']:.1%}", _fmt_interval(out["expert_success_ci95"]),
                      _fmt_return(out["expert_mean_return"]))
    console = stdout_console()
    console.print(table)
    origin = ", ".join(f"{k} from {v}" for k, v in out["settings_from"].items())
    console.print(f"settings: {origin}", highlight=False, soft_wrap=True)
    if out.get("workers", 1) > 1:
        how = "one batched prediction per step" if out["batched"] else "one prediction per worker"
        console.print(f"evaluated in {out['workers']} worker processes, {how}", highlight=False, soft_wrap=True)
    if out.get("videos"):
        folder = Path(out["videos"][0]).parent
        sheet = f", contact sheet {out['contact_sheet']}" if "contact_sheet" in out else ""
        console.print(f"videos: {len(out['videos'])} in {folder}{sheet}", highlight=False, soft_wrap=True)


def _fmt_interval(interval: list[float]) -> str:
    return f"{interval[0]:.1%} to {interval[1]:.1%}"


def _fmt_return(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
