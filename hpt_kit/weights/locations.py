"""Where weights live: a local path or ``hf://OWNER/REPO[@REVISION]`` on the Hugging Face Hub. Every
location string in the kit (checkpoints, run directories, published trunks) resolves through
:func:`resolve_location`.

Downloads go through ``huggingface_hub`` and so honour ``HF_HUB_OFFLINE``, ``HF_HOME``/the cache and
revisions; offline, a location resolves from the cache or fails with a clear error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hpt_kit.weights.errors import CheckpointError

HUB_FILES = ["model.safetensors", "checkpoint.json", "README.md", "config.yaml", "trunk.pth"]
HF_PATTERN = re.compile(r"^hf://(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")


class HubError(CheckpointError):
    """A Hub location that is malformed, unreachable or missing from the cache."""


@dataclass(frozen=True)
class HubLocation:
    repo_id: str
    revision: str | None


def parse_hf(location: str) -> HubLocation:
    m = HF_PATTERN.match(location)
    if not m:
        raise HubError(f"{location!r}: expected hf://OWNER/REPO or hf://OWNER/REPO@REVISION")
    return HubLocation(m["repo"], m["rev"])


def resolve_location(location: str | Path, what: str = "file or directory") -> Path:
    """A local path for a location: ``hf://`` is downloaded (or found in the cache), a path is checked
    (``what`` names the expected kind in the error)."""
    text = str(location)
    if text.startswith("hf://"):
        return download(text)
    path = Path(text)
    if not path.exists():
        raise CheckpointError(f"{path}: no such {what}")
    return path


def download(location: str) -> Path:
    """The local snapshot folder of ``hf://OWNER/REPO[@REVISION]`` (downloaded or from the cache)."""
    loc = parse_hf(location)
    # Only the files a kit checkpoint or a published trunk consists of: nothing else is fetched.
    return _snapshot(location, repo_id=loc.repo_id, revision=loc.revision, allow_patterns=HUB_FILES)


def _snapshot(location: str, **kwargs) -> Path:
    """``huggingface_hub.snapshot_download`` with its failures as one-line errors naming ``location``."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(**kwargs))
    except LocalEntryNotFoundError as exc:
        raise HubError(f"{location}: not in the local cache and the Hub is unreachable or offline ({exc})") from None
    except HfHubHTTPError as exc:
        raise HubError(f"{location}: {exc}") from None


HF_DATASET_PATTERN = re.compile(r"^hf://datasets/(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")


def resolve_dataset_location(location: str | Path) -> Path:
    """A local path for a dataset source: ``hf://datasets/OWNER/NAME[@REVISION]`` is downloaded whole
    (or found in the cache; offline, only the cache), a local path is checked."""
    text = str(location)
    if not text.startswith("hf://"):
        return resolve_location(text, "dataset file or folder")
    m = HF_DATASET_PATTERN.match(text)
    if not m:
        raise HubError(f"{text!r}: expected hf://datasets/OWNER/NAME or hf://datasets/OWNER/NAME@REVISION")
    return _snapshot(text, repo_id=m["repo"], revision=m["rev"], repo_type="dataset")
