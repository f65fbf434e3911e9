"""Session fixtures: RLDS sources written once by ``rlds_fixtures.write_rlds`` (real TFRecord shards,
TFDS's JSON metadata), a good one and one with a bad episode of each kind."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the fixture writer, also runnable as a script

from rlds_fixtures import write_rlds  # noqa: E402

BAD = {1: "inf_action", 2: "empty", 3: "ragged_state", 4: "bad_frame"}


@pytest.fixture(scope="session")
def rlds_source(tmp_path_factory) -> Path:
    """Four train episodes in two shards and a one-episode val split; the version folder."""
    return write_rlds(tmp_path_factory.mktemp("rlds"), episodes=4, val_episodes=1)


@pytest.fixture(scope="session")
def bad_source(tmp_path_factory) -> Path:
    """Six train episodes: 0 and 5 good, 1 to 4 bad as BAD says."""
    return write_rlds(tmp_path_factory.mktemp("rlds-bad"), episodes=6, bad=BAD)
