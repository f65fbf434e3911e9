"""Which Meta-World tasks each embodiment covers, and how a run narrows them down.

Nothing here imports Meta-World: registering the embodiments must stay instant, so the task names
and the simulator's fixed numbers are written out and the tests check them against the installed
package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hpt_kit import LanguageSpec, SpecError

TASKS_ENV = "HPT_METAWORLD_TASKS"

# Every v3 task, in the order of ``metaworld.env_dict.ALL_V3_ENVIRONMENTS``.
ALL_TASKS = (
    "assembly-v3",
    "basketball-v3",
    "bin-picking-v3",
    "box-close-v3",
    "button-press-topdown-v3",
    "button-press-topdown-wall-v3",
    "button-press-v3",
    "button-press-wall-v3",
    "coffee-button-v3",
    "coffee-pull-v3",
    "coffee-push-v3",
    "dial-turn-v3",
    "disassemble-v3",
    "door-close-v3",
    "door-lock-v3",
    "door-open-v3",
    "door-unlock-v3",
    "hand-insert-v3",
    "drawer-close-v3",
    "drawer-open-v3",
    "faucet-open-v3",
    "faucet-close-v3",
    "hammer-v3",
    "handle-press-side-v3",
    "handle-press-v3",
    "handle-pull-side-v3",
    "handle-pull-v3",
    "lever-pull-v3",
    "pick-place-wall-v3",
    "pick-out-of-hole-v3",
    "pick-place-v3",
    "plate-slide-v3",
    "plate-slide-side-v3",
    "plate-slide-back-v3",
    "plate-slide-back-side-v3",
    "peg-insert-side-v3",
    "peg-unplug-side-v3",
    "soccer-v3",
    "stick-push-v3",
    "stick-pull-v3",
    "push-v3",
    "push-wall-v3",
    "push-back-v3",
    "reach-v3",
    "reach-wall-v3",
    "shelf-place-v3",
    "sweep-into-v3",
    "sweep-v3",
    "window-open-v3",
    "window-close-v3",
)

# The MT10 benchmark, in the order of ``metaworld.env_dict.MT10_V3`` (which is the one-hot order).
MT10 = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)

# What each MT10 task asks for, in words: ``metaworld-lang`` tells the policy its task this way.
INSTRUCTIONS = {
    "reach-v3": "reach the goal position with the gripper",
    "push-v3": "push the puck to the goal",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "door-open-v3": "open the door",
    "drawer-open-v3": "open the drawer",
    "drawer-close-v3": "close the drawer",
    "button-press-topdown-v3": "press the button down from above",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}

SAWYER_OBS_DIM = 39  # Meta-World's observation: hand, gripper, objects, the same one step back, goal
CONTROL_HZ = 80.0  # 1 / env.dt: 5 physics steps of 2.5 ms per action
MAX_EPISODE_STEPS = 500  # Meta-World's max_path_length


@dataclass(frozen=True)
class TaskSet:
    """One embodiment: its name, the tasks it can run and whether observations carry an image."""

    name: str
    tasks: tuple[str, ...]  # the vocabulary; for several tasks, also the order of the one-hot
    description: str = ""
    views: tuple[str, ...] = ()  # cameras rendered into the observation; empty for state only
    image_size: int = 64
    image_variant: str = ""  # the embodiment that adds camera images to this one, if any
    # Set: the task comes as an instruction (INSTRUCTIONS) encoded with this spec, not as a one-hot.
    language: LanguageSpec | None = None

    @property
    def multi_task(self) -> bool:
        return len(self.tasks) > 1

    @property
    def state_dim(self) -> int:
        return SAWYER_OBS_DIM + len(self.one_hot(self.tasks[0]))

    def selected(self) -> tuple[str, ...]:
        """The tasks a call runs: all of them, or those ``HPT_METAWORLD_TASKS`` names (in vocabulary
        order, so the same choice always gives the same episodes). Single-task embodiments ignore it."""
        raw = os.environ.get(TASKS_ENV, "").strip()
        if not raw or not self.multi_task:
            return self.tasks
        wanted = [t.strip() for t in raw.split(",") if t.strip()]
        unknown = [t for t in wanted if t not in self.tasks]
        if unknown:
            raise SpecError(
                f"{TASKS_ENV} names {unknown}, which embodiment {self.name!r} does not have; "
                f"its tasks are {list(self.tasks)}"
            )
        return tuple(t for t in self.tasks if t in wanted)

    def one_hot(self, task: str) -> list[float]:
        """The task code appended to the state; empty for one task, or when an instruction names it."""
        if not self.multi_task or self.language is not None:
            return []
        return [float(t == task) for t in self.tasks]

    def instruction(self, task: str) -> str | None:
        """The task in words when this embodiment is told its task that way, else None."""
        return INSTRUCTIONS[task] if self.language is not None else None
