"""``[log] wandb = "offline"``: a real ``hpt-kit pretrain`` writes an offline W&B run into the run
directory, read back record by record with W&B's own reader (``wandb leet inspect`` prints the
``.wandb`` transaction log as protobuf text, parsed into ``wandb_internal_pb2.Record``) and compared
with metrics.jsonl; a resumed run continues the same W&B run id. No network: offline mode only."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HPT_KIT, ROOT

wandb = pytest.importorskip("wandb")
from google.protobuf import text_format  # noqa: E402 - after the skip: protobuf comes with wandb
from wandb.proto import wandb_internal_pb2  # noqa: E402

WANDB_CLI = str(Path(sys.executable).with_name("wandb"))

RECIPE = """
[run]
name = "wandb-smoke"

[trunk]
preset = "custom"
embed_dim = 32
num_blocks = 1
num_heads = 4

[[datasets]]
embodiment = "mujoco-arm3"
episodes = 4

[train]
steps = {steps}
batch_size = 8
warmup_steps = 2
log_every = 2
val_every = 3
val_batches = 1
checkpoint_every = 3
val_fraction = 0.25

[log]
wandb = "offline"
"""


def _env(tmp_path: Path) -> dict[str, str]:
    """W&B kept off the network and out of the home directory; WANDB_DIR points elsewhere to show
    that the run still lands in the run directory."""
    env = dict(os.environ)
    elsewhere = tmp_path / "wandb-elsewhere"
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(elsewhere),
               WANDB_CONFIG_DIR=str(elsewhere / "config"), WANDB_CACHE_DIR=str(elsewhere / "cache"),
               WANDB_DATA_DIR=str(elsewhere / "data"), WANDB_X_DISABLE_STATS="true")
    return env


def _pretrain(tmp_path: Path, run: Path, steps: int, *extra: str) -> None:
    recipe = tmp_path / f"recipe-{steps}.toml"
    recipe.write_text(RECIPE.format(steps=steps))
    out = subprocess.run([HPT_KIT, "pretrain", str(recipe), "--out", str(run), *extra], capture_output=True,
                         text=True, cwd=ROOT, env=_env(tmp_path))
    assert out.returncode == 0, out.stderr


def read_wandb(path: Path) -> list[wandb_internal_pb2.Record]:
    """Every record of a ``.wandb`` file, as W&B's own inspector prints it (text when not on a terminal)."""
    out = subprocess.run([WANDB_CLI, "leet", "inspect", str(path)], capture_output=True, text=True, check=True).stdout
    chunks = re.split(r"^# record \d+: \w+\n", out, flags=re.M)
    return [text_format.Parse(c, wandb_internal_pb2.Record()) for c in chunks if c.strip()]


def _item(item) -> tuple[str, object]:
    return item.key or "/".join(item.nested_key), json.loads(item.value_json)


def history(records) -> dict[int, dict[str, object]]:
    rows = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            row = dict(_item(i) for i in r.history.item)
            rows[r.history.step.num] = {k: v for k, v in row.items() if not k.startswith("_")}
    return rows


def config(records) -> dict[str, object]:
    out: dict[str, object] = {}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind in ("run", "config"):
            updates = r.run.config.update if kind == "run" else r.config.update
            out.update(_item(i) for i in updates)
    return out


def expected(metrics: list[dict]) -> dict[int, dict[str, float]]:
    """metrics.jsonl under the trackers' tags, one row per step."""
    rows: dict[int, dict[str, float]] = {}
    for r in metrics:
        row = rows.setdefault(r["step"], {}) if "step" in r else {}
        if "loss" in r:
            row.update({"train/loss": r["loss"], f"train/loss/{r['embodiment']}": r["loss"], "train/lr": r["lr"],
                        "train/samples_per_s": r["samples_per_s"], "train/grad_norm": r["grad_norm"]})
        row.update({f"val/loss/{k}": v for k, v in r.get("val_loss", {}).items()})
    return {s: row for s, row in rows.items() if row}


@pytest.mark.slow
def test_offline_run_holds_what_metrics_jsonl_holds_and_resume_keeps_the_id(tmp_path):
    run = tmp_path / "run"
    _pretrain(tmp_path, run, steps=6)
    run_id = (run / "wandb/run-id").read_text().strip()
    first = sorted(run.glob("wandb/offline-run-*"))
    assert len(first) == 1 and first[0].name.endswith(f"-{run_id}")
    assert not (tmp_path / "wandb-elsewhere" / "wandb").exists()  # the run directory, not WANDB_DIR
    _pretrain(tmp_path, run, 10, "--resume")  # train.steps may grow on resume: steps 7-10 continue the run
    assert (run / "wandb/run-id").read_text().strip() == run_id
    folders = sorted(run.glob("wandb/offline-run-*"))
    assert len(folders) == 2 and all(f.name.endswith(f"-{run_id}") for f in folders)

    parts = [read_wandb(f / f"run-{run_id}.wandb") for f in folders]
    runs = [r.run for p in parts for r in p if r.WhichOneof("record_type") == "run"]
    assert [(r.run_id, r.display_name, r.project) for r in runs] == [(run_id, "wandb-smoke", "hpt-kit")] * 2
    logged = history(parts[0]) | history(parts[1])
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    want = expected(metrics)
    assert sorted(logged) == sorted(want) == [2, 3, 4, 6, 8, 9, 10]
    for step, row in want.items():
        assert logged[step] == pytest.approx(row, rel=1e-6), step
    assert set(history(parts[0])) == {2, 3, 4, 6} and set(history(parts[1])) == {8, 9, 10}

    cfg = config(parts[0])
    assert cfg["train"]["lr"] == pytest.approx(3e-4) and cfg["run"]["name"] == "wandb-smoke"
    assert cfg["datasets"][0]["embodiment"] == "mujoco-arm3" and cfg["log"]["wandb"] == "offline"
    assert cfg["run_dir"] == str(run.resolve())
    start = next(r for r in metrics if r.get("event") == "start")
    assert (cfg["mode"], cfg["parameters"]) == (start["mode"], start["parameters"])
    assert config(parts[1])["train"]["steps"] == 10


def test_missing_wandb_is_one_line(tmp_path):
    """Without the package, the run stops before training with one line naming the extra."""
    run = tmp_path / "run"
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.format(steps=2))
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "wandb.py").write_text("raise ImportError('wandb is blocked here')\n")
    env = _env(tmp_path) | {"PYTHONPATH": str(blocker)}
    out = subprocess.run([HPT_KIT, "pretrain", str(recipe), "--out", str(run)], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[-1] == ("error: [log] wandb = 'offline' needs wandb: pip install 'hpt-kit[track]' "
                         "(wandb is blocked here)"), out.stderr


def test_the_setting_is_checked_and_may_change_on_resume():
    from hpt_kit.core.recipe import RecipeError, changed_settings, parse_recipe

    base = {"datasets": [{"embodiment": "toy"}]}
    with pytest.raises(RecipeError, match=r'wandb must be "offline", "online" or "" \(off\), got \'cloud\''):
        parse_recipe({**base, "log": {"wandb": "cloud"}}, "r.toml")
    before = parse_recipe(base, "r.toml").to_dict()
    after = parse_recipe({**base, "log": {"wandb": "offline", "tensorboard": True}}, "r.toml")
    assert changed_settings(before, after) == ([], ["log.tensorboard", "log.wandb"])
