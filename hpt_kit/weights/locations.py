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

from hpt_kit.weights.tensors import CheckpointError

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
