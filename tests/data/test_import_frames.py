"""Frames at import: views of different sizes share the smallest one's size by default, fitted with
their aspect ratio kept by the one numpy function a robot calls too (``hpt_kit.images.fit_frames``);
``image_size`` still wins; image stems of imported data fetch nothing; ``skip_bad`` that skips every
episode says why."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hpt_kit.core.importer import Feature, ImportSourceError, Selection
from hpt_kit.core.registry import load_registry
from hpt_kit.data.importing import ImportOptions, import_dataset
from hpt_kit.data.store import Dataset
from hpt_kit.images import fit_frames, fitted_shape
from tests.data.test_importing import ListImporter


class TwoCameras(ListImporter):
    """ListImporter with a second, smaller and square camera."""

    def describe(self, path):
        info = super().describe(path)
        wrist = Feature("cam.wrist", "image", (6, 6, 3), "uint8")
        return dataclasses.replace(info, features=(*info.features, wrist), default_views=("cam.front", "cam.wrist"))

    def episodes(self, path, selection: Selection):
        assert selection.image_size is None  # frames come as stored; the kit scales them
        for ep in super().episodes(path, dataclasses.replace(selection, views=("cam.front",))):
            if not ep.problem:
                rng = np.random.default_rng(100 + ep.index)
                ep.arrays["cam.wrist"] = rng.integers(0, 255, size=(len(ep.arrays["act"]), 6, 6, 3), dtype=np.uint8)
            yield ep


@pytest.fixture(scope="module")
def registry():
    return load_registry(load_entrypoints=False, embodiments=False)


def test_views_of_different_sizes_import_at_the_smallest_with_aspect_kept(tmp_path, registry):
    ds = Dataset(import_dataset(TwoCameras(), str(tmp_path), tmp_path / "a.zarr", ImportOptions(text_encoder="none"), registry))
    image = ds.spec.observation.image
    assert image.views == ("front", "wrist") and (image.height, image.width) == (6, 6)
    frames = ds.notes["import"]["frames"]
    assert frames["fit"] == "pad" and frames["source"] == {"front": [12, 16], "wrist": [6, 6]}
    stored = ds.load("image")  # (T, V, 6, 6, 3)
    source = next(TwoCameras().episodes(tmp_path, Selection(("obs.pos",), "act", ("cam.front", "cam.wrist"))))
    np.testing.assert_array_equal(stored[:6, 0], fit_frames(source.arrays["cam.front"], 6, 6, "pad"))
    np.testing.assert_array_equal(stored[:6, 1], source.arrays["cam.wrist"])  # already the size: untouched
    assert (stored[:6, 0, 0] == 0).all() and (stored[:6, 0, -1] == 0).all()  # 12x16 in 6x6: a black bar above and below
    # The image stem starts from random weights: training on imported frames downloads nothing.
    assert [s.options for s in ds.spec.stems if s.modality == "image"] == [{"weights": "none"}]

    opts = ImportOptions(text_encoder="none", image_size=8, image_fit="crop")
    ds = Dataset(import_dataset(TwoCameras(), str(tmp_path), tmp_path / "b.zarr", opts, registry))
    assert ds.load("image").shape[2:] == (8, 8, 3) and ds.notes["import"]["frames"]["fit"] == "crop"


def test_fit_frames_keeps_the_aspect_and_resizes_as_torch_antialiased_bilinear():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 48, 64, 3), dtype=np.uint8)
    for size in ((24, 32), (30, 20), (64, 96)):
        ours = fit_frames(frames, *size, "stretch")
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        ref = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        ref = ref.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1  # float rounding only
    assert fitted_shape((48, 64), 32, 32, "pad") == (24, 32) and fitted_shape((48, 64), 32, 32, "crop") == (32, 43)
    padded, cropped = fit_frames(frames, 32, 32, "pad"), fit_frames(frames, 32, 32, "crop")
    assert (padded[:, :4] == 0).all() and (padded[:, 28:] == 0).all() and padded[:, 4:28].any()
    np.testing.assert_array_equal(cropped, fit_frames(frames, 32, 43, "stretch")[:, :, 5:37])
    with pytest.raises(ValueError, match="fit must be one of pad, crop, stretch"):
        fit_frames(frames, 8, 8, "squash")


def test_skip_bad_that_skips_every_episode_names_the_first_ones_problem(tmp_path, registry):
    bad = {0: "missing", 1: "nan", 2: "short", 3: "nan"}
    out = tmp_path / "out.zarr"
    opts = ImportOptions(views=(), skip_bad=True)
    with pytest.raises(ImportSourceError, match=r"skipped every episode \(4\); the first, episode 0: video file .* is missing"):
        import_dataset(ListImporter(bad=bad), str(tmp_path), out, opts, registry)
    assert not out.exists()
