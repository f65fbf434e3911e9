"""``hpt-kit eval --video``: one mp4 per episode named by index and outcome, decoded back with PyAV
and frame-counted, and a contact sheet of the episodes' first frames."""

import json

import av
import numpy as np

from hpt_kit.video import read_frames
from tests.cli.test_end_to_end import hpt
from tests.conftest import ROOT


def test_eval_writes_mp4_per_episode_and_a_contact_sheet(tmp_path):
    run = tmp_path / "run"
    hpt("pretrain", ROOT / "recipes" / "smoke.toml", "--out", run, "--set", "datasets[0].episodes=3", "--steps", 2)
    videos = tmp_path / "videos"
    out = json.loads(hpt("eval", run, "--episodes", 2, "--video", videos, "--json").stdout)
    assert len(out["videos"]) == 2
    for k, (path, success) in enumerate(zip(out["videos"], out["successes"], strict=True)):
        assert path.endswith(f"mujoco-arm3-episode{k:03d}-{'success' if success else 'failure'}.mp4")
        with av.open(path) as container:
            assert container.streams.video[0].codec_context.name == "h264"
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert frames[0].shape == (128, 128, 3) and np.stack(frames).std() > 5  # a picture, not blank
        assert len(frames) == out["episode_lengths"][k] + 1  # a frame before every action and one after the last
    (sheet,) = read_frames(out["contact_sheet"])
    assert out["contact_sheet"] == str(videos / "mujoco-arm3-contact-sheet.png")
    assert sheet.shape == (134, 2 * 134, 3)  # two 128 px frames with 3 px borders, side by side

    raw = json.loads(hpt("eval", run, "--episodes", 1, "--video", tmp_path / "raw", "--video-format", "npz", "--json").stdout)
    (path,) = raw["videos"]
    assert path.endswith(".npz") and np.load(path)["frames"].shape[1:] == (128, 128, 3)
    assert (tmp_path / "raw" / "mujoco-arm3-contact-sheet.png").is_file()
