"""Session-wide robomimic files: a good one with twelve demos (so demo_10 and demo_11 test numeric
order) and two cameras, and one with a bad demo of every kind (see ``fixtures.write_bad_robomimic``)."""

from __future__ import annotations

import pytest

from .fixtures import write_bad_robomimic, write_robomimic

GOOD_LENGTHS = [5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7, 8]  # demo_N has GOOD_LENGTHS[N] steps


@pytest.fixture(scope="session")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("robomimic") / "image.hdf5"
    return write_robomimic(
        path,
        episodes=len(GOOD_LENGTHS),
        steps=GOOD_LENGTHS,
        frame_size=(48, 64),
        cameras=("agentview", "robot0_eye_in_hand"),
        masks={"train": range(10), "valid": [10, 11], "20_percent": [1, 11, 2]},
    )


@pytest.fixture(scope="session")
def bad_file(tmp_path_factory):
    return write_bad_robomimic(tmp_path_factory.mktemp("robomimic") / "bad.hdf5")
