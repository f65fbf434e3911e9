"""Locations on the Hugging Face Hub: ``hf://OWNER/REPO[@REVISION]``.

Downloads go through ``huggingface_hub`` and so honour ``HF_HUB_OFFLINE``, ``HF_HOME``/the cache and
revisions; offline, a location resolves from the cache or fails with a clear error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

HUB_FILES = ["model.safetensors", "checkpoint.json", "README.md", "config.yaml", "trunk.pth"]
HF_PATTERN = re.compile(r"^hf://(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")


class HubError(ValueError):
    pass


@dataclass(frozen=True)
class HubLocation:
    repo_id: str
    revision: str | None


def parse_hf(location: str) -> HubLocation:
    m = HF_PATTERN.match(location)
    if not m:
        raise HubError(f"{location!r}: expected hf://OWNER/REPO or hf://OWNER/REPO@REVISION")
    return HubLocation(m["repo"], m["rev"])


def resolve_location(location: str) -> Path:
    """A local path for a location: ``hf://`` is downloaded (or found in the cache), a path is checked."""
    if location.startswith("hf://"):
        return download(location)
    path = Path(location)
    if not path.exists():
        raise HubError(f"{path}: no such file or directory")
    return path


def download(location: str) -> Path:
    """The local snapshot folder of ``hf://OWNER/REPO[@REVISION]`` (downloaded or from the cache)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    loc = parse_hf(location)
    try:
        # Only the files a kit checkpoint or a published trunk consists of: nothing else is fetched.
        return Path(snapshot_download(repo_id=loc.repo_id, revision=loc.revision, allow_patterns=HUB_FILES))
    except LocalEntryNotFoundError as exc:
        raise HubError(f"{location}: not in the local cache and the Hub is unreachable or offline ({exc})") from None
    except HfHubHTTPError as exc:
        raise HubError(f"{location}: {exc}") from None


UPLOADED = ("model.safetensors", "checkpoint.json")


def model_card(description: dict, repo_id: str) -> str:
    """A Hugging Face model card for a kit checkpoint: metadata header, trunk, embodiments, data, metrics."""
    import yaml

    embodiments = description.get("embodiments", {})
    trunk = description["trunk"]
    metrics = description.get("metrics", {})
    header = {
        "library_name": "hpt-kit",
        "license": "mit",
        "pipeline_tag": "robotics",
        "tags": ["robotics", "hpt", "hpt-kit", f"trunk-{trunk.get('preset', 'custom')}", *sorted(embodiments)],
    }
    mode = description.get("mode", "pretrain")
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).strip(),
        "---",
        "",
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A Heterogeneous Pre-trained Transformer (HPT) policy trained with hpt-kit {description.get('kit_version', '')}"
        f" ({mode}, step {description.get('step', 0)}).",
        "",
        "## Trunk",
        "",
        f"- preset: `{trunk.get('preset')}` (width {trunk['embed_dim']}, {trunk['num_blocks']} blocks, {trunk['num_heads']} heads)",
    ]
    for key, label in (("parameters", "parameters"), ("trunk", "trunk parameters"), ("trainable", "trained parameters")):
        if key in metrics:
            lines.append(f"- {label}: {metrics[key]:,}")
    if mode == "transfer":
        lines.append(f"- trunk frozen during training: {'yes' if description.get('frozen_trunk') else 'no'}")
        lines.append(f"- trunk source: `{description.get('trunk_source')}` (sha256 `{description.get('trunk_source_sha256', '')}`)")
    lines += [
        "",
        "## Embodiments",
        "",
        "| embodiment | state dim | action dim | observation horizon | action horizon | head |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, e in embodiments.items():
        s = e["spec"]
        lines.append(
            f"| {name} | {s['observation']['state_dim']} | {s['action']['dim']} | {s['observation_horizon']} "
            f"| {s['head']['action_horizon']} | {s['head']['kind']} |"
        )
    lines += ["", "## Training data", "", "| embodiment | episodes | steps | notes |", "| --- | --- | --- | --- |"]
    for name, e in embodiments.items():
        d = e.get("dataset", {})
        notes = ", ".join(f"{k}={v}" for k, v in sorted(d.get("notes", {}).items()))
        lines.append(f"| {name} | {d.get('num_episodes', '')} | {d.get('num_steps', '')} | {notes} |")
    val = metrics.get("val_loss", {})
    if val:
        lines += ["", "## Metrics", "", "| embodiment | validation loss |", "| --- | --- |"]
        lines += [f"| {k} | {v:.5f} |" for k, v in val.items()]
    first = next(iter(embodiments), "EMBODIMENT")
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "pip install hpt-kit",
        f"hpt-kit eval hf://{repo_id} --embodiment {first} --episodes 20",
        f"hpt-kit transfer --embodiment YOUR_ROBOT --trunk hf://{repo_id} --freeze-trunk",
        "```",
        "",
    ]
    return "\n".join(lines)


def prepare_upload(checkpoint_folder: Path, description: dict, repo_id: str, out: Path) -> Path:
    """The exact folder ``push`` uploads: weights, description and a generated model card."""
    import shutil

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    for name in UPLOADED:
        shutil.copy2(Path(checkpoint_folder) / name, out / name)
    (out / "README.md").write_text(model_card(description, repo_id))
    return out


def push(folder: Path, repo_id: str, private: bool = False, revision: str | None = None) -> str:
    """Upload a prepared folder to ``repo_id`` (created if missing); returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, revision=revision, commit_message="Upload hpt-kit checkpoint"
        )
    except HfHubHTTPError as exc:
        raise HubError(f"hf://{repo_id}: upload failed ({exc})") from None
    except OSError as exc:  # no network, DNS failure
        raise HubError(f"hf://{repo_id}: the Hub is unreachable ({exc})") from None
    return str(getattr(info, "commit_url", info))
