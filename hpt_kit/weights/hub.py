"""Publishing a kit checkpoint on the Hugging Face Hub: the model card and the upload."""

from __future__ import annotations

from pathlib import Path

from hpt_kit.weights.locations import HubError

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


def push(folder: Path, repo_id: str, private: bool = False, revision: str | None = None, repo_type: str = "model") -> str:
    """Upload a prepared folder to ``repo_id`` (created if missing; ``repo_type`` "model" for a
    checkpoint, "dataset" for a dataset); returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    what = "checkpoint" if repo_type == "model" else repo_type
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type)
        info = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, revision=revision, repo_type=repo_type,
            commit_message=f"Upload hpt-kit {what}",
        )
    except HfHubHTTPError as exc:
        raise HubError(f"hf://{repo_id}: upload failed ({exc})") from None
    except OSError as exc:  # no network, DNS failure
        raise HubError(f"hf://{repo_id}: the Hub is unreachable ({exc})") from None
    return str(getattr(info, "commit_url", info))
