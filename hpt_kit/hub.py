"""Locations on the Hugging Face Hub: ``hf://OWNER/REPO[@REVISION]``.

Downloads go through ``huggingface_hub`` and so honour ``HF_HUB_OFFLINE``, ``HF_HOME``/the cache and
revisions; offline, a location resolves from the cache or fails with a clear error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

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


def download(location: str) -> Path:
    """The local snapshot folder of ``hf://OWNER/REPO[@REVISION]`` (downloaded or from the cache)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    loc = parse_hf(location)
    try:
        return Path(snapshot_download(repo_id=loc.repo_id, revision=loc.revision))
    except LocalEntryNotFoundError as exc:
        raise HubError(f"{location}: not in the local cache and the Hub is unreachable or offline ({exc})") from None
    except HfHubHTTPError as exc:
        raise HubError(f"{location}: {exc}") from None
