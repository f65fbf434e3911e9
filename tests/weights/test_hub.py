"""hf:// locations resolved offline from a Hugging Face cache laid out by the test, transfer from a
published trunk with its checksum followed through, and the exact folder and card ``push`` uploads."""

import hashlib
import json
import os
import shutil
import subprocess

import pytest
import yaml
from safetensors.torch import load_file

from hpt_kit.core.recipe import parse_recipe
from hpt_kit.core.registry import load_registry
from hpt_kit.train.loop import train
from hpt_kit.weights.tensors import tensor_digest
from hpt_kit.weights.trunks import resolve_trunk
from tests.conftest import HPT_KIT, ROOT
from tests.weights.test_published import publish_reference

pytestmark = pytest.mark.slow


def cache_repo(hub, repo_id, files, ref="main", kind="models"):
    """Lay ``files`` out as a cached snapshot of ``repo_id`` (a model or, ``kind="datasets"``, a
    dataset repository) with ``ref`` pointing at it, as huggingface_hub's cache keeps them."""
    owner, name = repo_id.split("/")
    commit = hashlib.sha1(f"{repo_id}@{ref}".encode()).hexdigest()
    base = hub / f"{kind}--{owner}--{name}"
    shutil.copytree(files, base / "snapshots" / commit)
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / ref).write_text(commit)
    return commit


@pytest.fixture
def offline(tmp_path):
    hub = tmp_path / "hub"
    hub.mkdir()
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    return hub, env


def hpt(*args, env, check=True):
    out = subprocess.run([HPT_KIT, *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT)
    if check and out.returncode != 0:
        raise AssertionError(f"hpt-kit {' '.join(map(str, args))}: {out.stderr}")
    return out


def test_published_trunk_on_the_hub_transfers_with_the_same_weights(tmp_path, offline, data_root):
    hub, env = offline
    publish_reference(tmp_path / "pub", width=32, blocks=2, heads=4, seed=1)
    publish_reference(tmp_path / "pub-v1", width=32, blocks=2, heads=4, seed=2)
    digest = resolve_trunk(tmp_path / "pub").digest
    cache_repo(hub, "acme/hpt-tiny", tmp_path / "pub")
    commit_v1 = cache_repo(hub, "acme/hpt-tiny", tmp_path / "pub-v1", ref="v1")

    info = json.loads(hpt("info", "hf://acme/hpt-tiny", "--json", env=env).stdout)
    assert info["format"] == "hpt-published-trunk" and info["trunk_sha256"] == digest
    assert info["parameters"]["trunk"] == 2 * (12 * 32 * 32 + 15 * 32)
    for rev in ("v1", commit_v1):
        other = json.loads(hpt("info", f"hf://acme/hpt-tiny@{rev}", "--json", env=env).stdout)
        assert other["trunk_sha256"] == resolve_trunk(tmp_path / "pub-v1").digest != digest
    missing = hpt("info", "hf://acme/not-cached", env=env, check=False)
    assert missing.returncode == 1 and "not in the local cache" in missing.stderr

    run = tmp_path / "xfer"
    hpt("transfer", "--embodiment", "mujoco-arm3", "--trunk", "hf://acme/hpt-tiny", "--freeze-trunk",
        "--steps", 20, "--out", run, env={**env, "HPT_KIT_DATA": str(data_root)})
    desc = json.loads((run / "checkpoints" / "latest" / "checkpoint.json").read_text())
    assert desc["trunk_source"] == "hf://acme/hpt-tiny" and desc["trunk_source_format"] == "hpt-published-trunk"
    assert desc["trunk_source_sha256"] == digest
    after = load_file(str(run / "checkpoints" / "latest" / "model.safetensors"))
    assert tensor_digest({k[6:]: v for k, v in after.items() if k.startswith("trunk.")}) == digest
    result = json.loads(hpt("eval", run, "--episodes", 2, "--json", env=env).stdout)
    assert 0 <= result["success_rate"] <= 1


@pytest.fixture
def kit_run(tmp_path, data_root):
    recipe = parse_recipe(
        {
            "trunk": {"preset": "tiny"},
            "datasets": [{"embodiment": "mujoco-arm3", "episodes": 8}],
            "train": {"steps": 10, "batch_size": 16, "val_every": 10, "checkpoint_every": 10},
        },
        "test",
    )
    train(recipe, tmp_path / "run", load_registry())
    return tmp_path / "run"


def test_push_prepares_exactly_the_checkpoint_and_a_model_card(tmp_path, kit_run, offline):
    _, env = offline
    out = tmp_path / "upload"
    hpt("push", kit_run, "alice/arm3-policy", "--dry-run", out, env=env)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "checkpoint.json", "model.safetensors"]
    latest = kit_run / "checkpoints" / "latest"
    assert (out / "model.safetensors").read_bytes() == (latest / "model.safetensors").read_bytes()
    assert (out / "checkpoint.json").read_text() == (latest / "checkpoint.json").read_text()
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["library_name"] == "hpt-kit" and "mujoco-arm3" in header["tags"] and "trunk-tiny" in header["tags"]
    assert "| mujoco-arm3 | 18 | 3 | 1 | 4 | mlp |" in card
    assert "| mujoco-arm3 | 8 |" in card and "mujoco_version=" in card
    assert "## Metrics" in card and "hpt-kit eval hf://alice/arm3-policy" in card
    bad = hpt("push", kit_run, "not a repo", "--dry-run", tmp_path / "x", env=env, check=False)
    assert bad.returncode == 1 and "OWNER/REPO" in bad.stderr


def test_a_pushed_checkpoint_resolves_from_the_hub_cache(tmp_path, kit_run, offline):
    hub, env = offline
    hpt("push", kit_run, "alice/arm3-policy", "--dry-run", tmp_path / "upload", env=env)
    cache_repo(hub, "alice/arm3-policy", tmp_path / "upload")
    result = json.loads(hpt("eval", "hf://alice/arm3-policy", "--episodes", 2, "--json", env=env).stdout)
    assert result["embodiment"] == "mujoco-arm3" and len(result["successes"]) == 2
    info = json.loads(hpt("info", "hf://alice/arm3-policy", "--json", env=env).stdout)
    assert info["format"] == "hpt-kit-checkpoint" and info["step"] == 10
