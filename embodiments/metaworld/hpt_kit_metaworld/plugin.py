"""The Meta-World embodiments, registered with hpt-kit through the ``hpt_kit`` entry point.

``metaworld`` is the Sawyer arm on the ten MT10 tasks, its state tagged with a task one-hot;
``metaworld-rgb`` adds a 64x64 image from the ``corner`` camera; ``metaworld-lang`` is told its MT10
task by an English instruction instead of the one-hot; ``metaworld-mt50`` covers all 50 v3 tasks;
``metaworld-<task>`` (e.g. ``metaworld-reach-v3``) is one task alone, without a one-hot, for transfer
to a task a multi-task run held out. Registration builds no environment.
"""

from __future__ import annotations

from functools import partial

import hpt_kit
from hpt_kit import ActionSpec, Embodiment, HeadSpec, ImageSpec, LanguageSpec, ObservationSpec, StemSpec

from hpt_kit_metaworld import runner
from hpt_kit_metaworld.tasks import ALL_TASKS, CONTROL_HZ, MAX_EPISODE_STEPS, MT10, TaskSet

METAWORLD = TaskSet(
    name="metaworld",
    tasks=MT10,
    image_variant="metaworld-rgb",
    description="Sawyer arm on the 10 Meta-World MT10 v3 tasks; state is the 39-d observation plus a task one-hot.",
)

METAWORLD_RGB = TaskSet(
    name="metaworld-rgb",
    tasks=MT10,
    views=("corner",),
    description=METAWORLD.description + " Observations add a 64x64 RGB image from the 'corner' camera.",
)

METAWORLD_LANG = TaskSet(
    name="metaworld-lang",
    tasks=MT10,
    # One 384-d sentence vector per instruction, from the hpt-kit-minilm plugin's encoder.
    language=LanguageSpec(tokens=1, channels=384, encoder="all-minilm-l6-v2"),
    description="Sawyer arm on the 10 Meta-World MT10 v3 tasks, told its task by an English instruction "
    "(all-MiniLM-L6-v2 sentence vector, from hpt-kit-minilm) instead of a one-hot; state is the 39-d "
    "observation.",
)

METAWORLD_MT50 = TaskSet(
    name="metaworld-mt50",
    tasks=ALL_TASKS,
    description="Sawyer arm on all 50 Meta-World v3 tasks; state is the 39-d observation plus a task one-hot.",
)

SINGLE_TASKS = tuple(
    TaskSet(name=f"metaworld-{task}", tasks=(task,), description=f"Sawyer arm on Meta-World {task} alone.")
    for task in ALL_TASKS
)

TASK_SETS = (METAWORLD, METAWORLD_RGB, METAWORLD_LANG, METAWORLD_MT50, *SINGLE_TASKS)


# The image variants' camera frames: a ResNet-18 (ImageNet weights) fine-tuned end to end, 16 tokens
# per view. `hpt-kit convert NAME --image-encoder resnet18` stores frozen features instead.
IMAGE_STEM = StemSpec("image", kind="resnet", options={"arch": "resnet18", "weights": "imagenet"})


def make_embodiment(taskset: TaskSet) -> Embodiment:
    size = taskset.image_size
    image = ImageSpec(taskset.views, size, size) if taskset.views else None
    return Embodiment(
        name=taskset.name,
        observation=ObservationSpec(state_dim=taskset.state_dim, image=image, language=taskset.language),
        action=ActionSpec(dim=runner.ACTION_DIM, low=(-1.0,) * 4, high=(1.0,) * 4, control_hz=CONTROL_HZ),
        convert_dataset=partial(runner.convert_dataset, taskset),
        rollout=partial(runner.rollout, taskset),
        expert_rollout=partial(runner.expert_rollout, taskset),
        rollout_envs=partial(runner.rollout_envs, taskset),
        stems=(StemSpec("state"),)
        + ((IMAGE_STEM,) if taskset.views else ())
        # One sentence vector is one input token: more latents than one would all be equal.
        + ((StemSpec("language", num_tokens=1),) if taskset.language else ()),
        head=HeadSpec(action_horizon=4),
        observation_horizon=1,  # the observation already stacks the previous step's hand and objects
        max_episode_steps=MAX_EPISODE_STEPS,
        description=taskset.description,
    )


def embodiments() -> list[Embodiment]:
    return [make_embodiment(taskset) for taskset in TASK_SETS]


@hpt_kit.hookimpl
def hpt_register_embodiments(registry) -> None:
    for embodiment in embodiments():
        registry.add(embodiment)
