"""Videos written through PyAV and decoded back with it: frame counts, sizes, metadata, contact sheets."""

import json

import av
import numpy as np
import pytest

from hpt_kit.video import FAILURE_RGB, SUCCESS_RGB, contact_sheet, read_frames, write_video


def moving_square(steps: int, h: int, w: int) -> np.ndarray:
    frames = np.zeros((steps, h, w, 3), np.uint8)
    for t in range(steps):
        frames[t, 2:8, t : t + 6] = 255
    return frames


def test_mp4_is_h264_with_every_frame_and_the_outcome(tmp_path):
    frames = moving_square(9, 24, 32)
    path = write_video(tmp_path / "deep" / "ep.mp4", frames, 12.5, success=True)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.average_rate == 12.5
        assert json.loads(container.metadata["comment"])["success"] is True
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 9 and decoded[0].shape == (24, 32, 3)
    back = read_frames(path)
    assert np.abs(back.astype(int) - frames).mean() < 8  # lossy, but the same picture
    assert read_frames(path, limit=2).shape == (2, 24, 32, 3)
    assert not list(path.parent.glob(".*tmp"))  # written under a temporary name, then renamed


def test_odd_sizes_are_padded_and_npz_is_exact(tmp_path):
    frames = moving_square(3, 15, 21)
    assert read_frames(write_video(tmp_path / "odd.mp4", frames, 10.0)).shape == (3, 16, 22, 3)
    np.testing.assert_array_equal(read_frames(write_video(tmp_path / "raw.npz", list(frames), 10.0)), frames)
    with pytest.raises(ValueError, match="unknown video format '.gif'"):
        write_video(tmp_path / "x.gif", frames, 10.0)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8"):
        write_video(tmp_path / "x.mp4", frames.astype(np.float32), 10.0)


def test_contact_sheet_frames_each_episode_by_outcome(tmp_path):
    firsts = [np.full((10, 12, 3), 100 + i, np.uint8) for i in range(5)]
    path = contact_sheet(tmp_path / "sheet.png", firsts, [True, False, None, True, False], columns=3, border=2)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "png"
    (sheet,) = read_frames(path)
    assert sheet.shape == (2 * 14, 3 * 16, 3)  # 2 rows x 3 columns of 14 x 16 cells
    assert tuple(sheet[0, 0]) == SUCCESS_RGB and tuple(sheet[0, 16]) == FAILURE_RGB
    assert tuple(sheet[2, 2]) == (100, 100, 100) and tuple(sheet[14 + 2, 16 + 2]) == (104, 104, 104)
    assert (sheet[14:, 32:] == 255).all()  # the sixth cell stays empty
