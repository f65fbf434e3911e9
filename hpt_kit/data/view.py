"""``hpt-kit data view``: one episode of a dataset as a picture or a video (matplotlib).

The figure holds the episode's camera views (when the dataset stores frames) above its state and
action curves. A PNG shows up to ``STRIP`` frames spread over the episode and the whole curves; an
mp4 has one frame per step, the views of that step above the curves with a cursor at it, at the
embodiment's control rate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpt_kit.core.spec import ACTION, IMAGE, STATE, action_labels, state_labels
from hpt_kit.data.store import Dataset

STRIP = 6  # frames in a PNG's strip
LEGEND_DIMS = 8  # curves get a legend up to this many dimensions


def _figure(ep: dict[str, np.ndarray], title: str, frames: int, labels: dict[str, tuple[str, ...]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve_fields = [f for f in (STATE, ACTION) if ep[f].shape[1]]  # a state-free robot: the action alone
    rows = [3.0] * bool(frames) + [1.6] * len(curve_fields)
    fig = plt.figure(figsize=(8, sum(rows)), dpi=100)
    grid = fig.add_gridspec(len(rows), frames or 1, height_ratios=rows)
    image_axes = [fig.add_subplot(grid[0, i]) for i in range(frames)]
    for ax in image_axes:
        ax.set_axis_off()
    curves = []
    for row, field in enumerate(curve_fields, start=1 if frames else 0):
        ax = fig.add_subplot(grid[row, :])
        values = ep[field]
        for d in range(values.shape[1]):
            ax.plot(values[:, d], linewidth=1, label=labels[field][d])
        ax.set_ylabel(field)
        ax.set_xlim(0, max(len(values) - 1, 1))
        ax.grid(alpha=0.3)
        if values.shape[1] <= LEGEND_DIMS:
            ax.legend(fontsize=6, ncol=values.shape[1], loc="upper right")
        curves.append(ax)
    curves[-1].set_xlabel("step")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig, image_axes, curves


def _views(image: np.ndarray) -> np.ndarray:
    """(V, h, w, 3) side by side as (h, V*w, 3)."""
    return np.concatenate(list(image), axis=1)


def _pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def view_episode(ds: Dataset, index: int, out: Path) -> Path:
    """Write episode ``index`` of ``ds`` to ``out`` (``.png`` or ``.mp4``)."""
    import matplotlib.pyplot as plt

    from hpt_kit.video import write_video

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".mp4"):
        raise ValueError(f"{out}: write a .png or an .mp4")
    ep = ds.episode(index)
    steps = len(ep[ACTION])
    title = f"{ds.name}: episode {index} of {ds.path.name}, {steps} steps"
    if ds.spec.observation.image is not None:
        title += f"; views left to right: {', '.join(ds.spec.observation.image.views)}"
    labels = {STATE: state_labels(ds.spec.observation), ACTION: action_labels(ds.spec.action)}  # the source's names where kept
    images = ep.get(IMAGE)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        shown = np.unique(np.linspace(0, steps - 1, min(STRIP, steps)).round().astype(int)) if images is not None else []
        fig, image_axes, _ = _figure(ep, title, len(shown), labels)
        for ax, t in zip(image_axes, shown, strict=True):
            ax.imshow(_views(images[t]))
            ax.set_title(f"step {t}", fontsize=8)
        fig.savefig(out)
        plt.close(fig)
        return out
    fig, image_axes, curves = _figure(ep, title, 1 if images is not None else 0, labels)
    picture = image_axes[0].imshow(_views(images[0])) if images is not None else None
    cursors = [ax.axvline(0, color="black", linewidth=1) for ax in curves]
    rendered = []
    for t in range(steps):
        if picture is not None:
            picture.set_data(_views(images[t]))
            image_axes[0].set_title(f"step {t}", fontsize=8)
        for cursor in cursors:
            cursor.set_xdata([t, t])
        rendered.append(_pixels(fig))
    plt.close(fig)
    return write_video(out, np.stack(rendered), ds.spec.action.control_hz)
