"""``hpt-kit data view``: an episode drawn as an mp4 (one frame per step, decoded back and counted)
or a PNG, from real stores."""

import subprocess

import av
import matplotlib.image

from hpt_kit.data.convert import convert
from hpt_kit.data.store import Dataset
from tests.cli.test_end_to_end import hpt
from tests.conftest import HPT_KIT, make_image_toy, make_toy


def test_view_an_episode_with_frames_and_one_without(tmp_path):
    cams = convert(make_image_toy(length=8), tmp_path / "cam.zarr", episodes=2, seed=0)
    hpt("data", "view", cams, "--episode", 1, "--out", tmp_path / "ep.mp4")
    with av.open(str(tmp_path / "ep.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.average_rate == 10  # the toy's control rate
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == len(Dataset(cams).episode(1)["action"]) == 8
    assert frames[0].shape == (620, 800, 3) and not (frames[0] == frames[-1]).all()  # the cursor moves

    hpt("data", "view", cams, "--out", tmp_path / "ep.png")
    assert matplotlib.image.imread(tmp_path / "ep.png").shape[:2] == (620, 800)

    plain = convert(make_toy(), tmp_path / "plain.zarr", episodes=2, seed=0)
    out = subprocess.run([HPT_KIT, "data", "view", str(plain), "--episode", "1"], cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.strip() == "wrote plain-episode001.png"  # state only: a PNG by default, here
    assert (tmp_path / "plain-episode001.png").is_file()
    bad = hpt("data", "view", plain, "--episode", 2, check=False)
    assert bad.returncode != 0 and "has 2 episodes (0-1)" in bad.stderr
