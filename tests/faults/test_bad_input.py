"""Bad input is refused in one line that names the file and the key, before any work, and user text
is printed as it is (never read as rich markup)."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.faults.conftest import hpt, write_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(arm3, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-bad-input")
    hpt("pretrain", write_recipe(root / "r.toml", arm3, steps=10), "--out", root / "run")
    return root / "run"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"lr": "nan"}, "train: lr: must be a finite number, got nan"),
        ({"lr": "-1e-3"}, "train: lr: must be > 0, got -0.001"),
        ({"extra": "warmup_steps = -3"}, "warmup_steps and skip_nonfinite must be >= 0"),
        ({"extra": "grad_clip = -1.0"}, "grad_clip must be >= 0"),
    ],
)
def test_out_of_range_train_values_are_refused_at_load_naming_file_and_key(change, message, arm3, tmp_path):
    if "extra" in change:  # replace the template's own line rather than repeating the key
        key = change["extra"].split(" = ")[0]
        recipe = write_recipe(tmp_path / "r.toml", arm3)
        text = "\n".join(line for line in recipe.read_text().splitlines() if not line.startswith(f"{key} ="))
        recipe.write_text(text + "\n" + change["extra"] + "\n")
    else:
        recipe = write_recipe(tmp_path / "r.toml", arm3, **change)
    out = hpt("pretrain", recipe, "--out", tmp_path / "run", check=False)
    assert out.returncode == 1 and f"{recipe}: " in out.stderr and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_an_infinite_dataset_weight_is_refused_naming_the_dataset(arm3, tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", arm3)
    recipe.write_text(recipe.read_text().replace("convert = false", "convert = false\nweight = inf"))
    out = hpt("pretrain", recipe, "--out", tmp_path / "run", check=False)
    assert out.returncode == 1 and f"{recipe}: datasets[0]: weight must be a finite number > 0, got inf" in out.stderr


@pytest.mark.parametrize("name", ["a[/]x", "a[vision]/x", "a[bold]b[/bold]"])
def test_paths_with_brackets_are_printed_as_they_are(name, tmp_path):
    out = hpt("info", tmp_path / name, check=False)
    assert out.returncode == 1 and str(tmp_path / name) in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "MarkupError" not in out.stderr


def test_a_hint_with_brackets_keeps_them(tmp_path):
    recipe = tmp_path / "empty.toml"
    recipe.write_text('[run]\nname = "x"\n')
    out = hpt("pretrain", recipe, check=False)
    assert out.returncode == 1 and "add at least one [[datasets]] table" in out.stderr


def test_info_refuses_weights_that_do_not_fit_the_description(run, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    source = run / "checkpoints" / "latest"
    (folder / "checkpoint.json").write_text((source / "checkpoint.json").read_text())
    tensors = load_file(str(source / "model.safetensors"))
    missing = sorted(tensors)[0]
    tensors.pop(missing)
    tensors["stems.extra.weight"] = torch.zeros(2)
    save_file(tensors, str(folder / "model.safetensors"))
    out = hpt("info", folder, check=False)
    assert out.returncode == 1 and missing in out.stderr and "stems.extra.weight" in out.stderr, out.stderr


def test_a_published_trunk_with_broken_yaml_is_one_line_naming_file_and_place(tmp_path):
    folder = tmp_path / "published"
    folder.mkdir()
    (folder / "config.yaml").write_text("network:\n  embed_dim: [1, 2\n  num_blocks: 2\n")
    torch.save({"trunk.x": torch.zeros(1)}, folder / "trunk.pth")
    out = hpt("info", folder, check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert f"{folder / 'config.yaml'}: not valid YAML (line " in lines[0]


def test_a_pickle_that_runs_code_is_refused_on_resume(run, arm3, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    state = (copy / "checkpoints" / "latest").resolve() / "training_state.pt"
    state.write_bytes(pickle.dumps({"step": 10, "x": Evil()}))
    out = hpt("pretrain", write_recipe(tmp_path / "r.toml", arm3, steps=20), "--out", copy, "--resume", check=False)
    assert out.returncode == 1 and f"{state}: refused to load" in out.stderr and "pwned" not in out.stdout + out.stderr


def test_a_usage_error_is_one_line_and_exits_1(tmp_path):
    out = hpt("transfer", "--embodiment", "mujoco-arm4", "--out", tmp_path / "run", check=False)
    assert out.returncode == 1 and "Invalid value for --trunk" in out.stderr and "BadParameter" not in out.stderr
    assert out.stderr.strip().splitlines() == [line for line in out.stderr.strip().splitlines() if line.startswith("error: ")]
