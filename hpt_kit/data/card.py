"""Publishing a dataset on the Hugging Face Hub: the dataset card and the folder uploaded.

The repository's root is the zarr store itself (``zarr.json`` and the arrays) with ``README.md``
beside it, so a download of ``hf://datasets/OWNER/NAME`` is a dataset the kit opens as it is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from hpt_kit.data.store import Dataset
from hpt_kit.data.tools import dataset_info
from hpt_kit.weights.locations import HF_DATASET_PATTERN, HF_PATTERN, HubError


def dataset_repo_id(target: str) -> str:
    """``hf://datasets/OWNER/NAME`` or ``OWNER/NAME`` as ``OWNER/NAME``."""
    m = HF_DATASET_PATTERN.match(target) or HF_PATTERN.match(f"hf://{target}")
    if m is None or m["rev"]:
        raise HubError(f"{target!r}: expected hf://datasets/OWNER/NAME or OWNER/NAME (push to a branch with --revision)")
    return m["repo"]


def dataset_card(info: dict[str, Any], spec: dict[str, Any], repo_id: str) -> str:
    """A Hugging Face dataset card: metadata header, what the data is, its fields, provenance, use."""
    import yaml

    header = {
        "library_name": "hpt-kit",
        "task_categories": ["robotics"],
        "tags": ["robotics", "hpt", "hpt-kit", info["embodiment"]],
    }
    obs, action = spec["observation"], spec["action"]
    lengths = info["episode_length"]
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).strip(),
        "---",
        "",
        f"# {repo_id.split('/')[-1]}",
        "",
        f"Robot demonstrations of the `{info['embodiment']}` embodiment in the hpt-kit dataset format (zarr v3, "
        f"format version 1): {info['episodes']} episodes, {info['steps']} steps (length {lengths['min']}-{lengths['max']}, "
        f"mean {lengths['mean']:.1f}) at {info['control_hz']:g} Hz, {info['bytes_on_disk'] / 1e6:.2f} MB. "
        f"Made {info['created']} by hpt-kit {info['kit_version']}.",
        "",
        "## Embodiment",
        "",
        f"- state: {obs['state_dim']} values; action: {action['dim']} values in [{', '.join(f'{x:g}' for x in action['low'])}] .. "
        f"[{', '.join(f'{x:g}' for x in action['high'])}]",
    ]
    if obs.get("image"):
        image = obs["image"]
        lines.append(f"- cameras: {', '.join(image['views'])} ({image['height']}x{image['width']})")
    lines += ["", "## Fields", "", "| field | shape per step | dtype |", "| --- | --- | --- |"]
    lines += [f"| {name} | {tuple(f['shape'])} | {f['dtype']} |" for name, f in info["fields"].items()]
    if info["instructions"]:
        lines += ["", "## Instructions", "", "| instruction | episodes |", "| --- | --- |"]
        lines += [f"| {text} | {n} |" for text, n in info["instructions"].items()]
    notes = {k: v for k, v in info["notes"].items() if k not in ("instructions", "episode_instructions")}
    if notes:
        lines += ["", "## Provenance", "", "```json", json.dumps(notes, indent=2, default=str), "```"]
    name = repo_id.split("/")[-1]
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "pip install hpt-kit",
        f"hpt-kit data info hf://datasets/{repo_id}",
        f"huggingface-cli download --repo-type dataset {repo_id} --local-dir data/{name}.zarr",
        "```",
        "",
        f'and in a recipe: `[[datasets]]` with `embodiment = "{info["embodiment"]}"` and `path = "data/{name}.zarr"`.',
        "",
    ]
    return "\n".join(lines)


def prepare_dataset_upload(ds: Dataset, repo_id: str, out: Path) -> Path:
    """The exact folder ``data push`` uploads: the store's files and a generated card."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty")
    shutil.copytree(ds.path, out, dirs_exist_ok=True)
    (out / "README.md").write_text(dataset_card(dataset_info(ds), ds.attrs["spec"], repo_id))
    return out
