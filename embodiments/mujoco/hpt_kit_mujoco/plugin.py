"""The MuJoCo reaching embodiments, registered with hpt-kit through the ``hpt_kit`` entry point.

``mujoco-arm3`` (planar, 3 joints) and ``mujoco-arm4`` (spatial, 4 joints) differ in joint count and
therefore in state and action size, which is what a heterogeneous pre-training run needs to exercise.
``mujoco-arm3-rgb`` is ``mujoco-arm3`` with a 64x64 camera image in every observation.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import hpt_kit
from hpt_kit import ActionSpec, Embodiment, HeadSpec, ImageSpec, ObservationSpec, StemSpec

from hpt_kit_mujoco import runner
from hpt_kit_mujoco.reach import ArmTask, ReachEnv

ARM3 = ArmTask(
    name="mujoco-arm3",
    xml="arm3.xml",
    home=(0.0, 0.4, 0.4),
    target_low=(-2.0, -2.0, -2.0),
    target_high=(2.0, 2.0, 2.0),
    # The arm starts bent one way; targets far behind it invite the expert into a joint limit.
    max_target_azimuth=2.0,
    min_target_radius=0.08,
    image_variant="mujoco-arm3-rgb",
    description="Planar 3-joint arm reaching a random target in its horizontal plane (MuJoCo).",
)

ARM4 = ArmTask(
    name="mujoco-arm4",
    xml="arm4.xml",
    home=(0.0, 0.8, -1.2, -0.8),
    target_low=(-1.5, 0.0, -2.0, -1.5),
    target_high=(1.5, 1.5, 0.5, 1.0),
    min_target_height=0.03,
    min_target_radius=0.08,
    description="Spatial 4-joint arm (base yaw + 3 pitch joints) reaching a random target in 3D (MuJoCo).",
)

ARM3_RGB = dataclasses.replace(
    ARM3,
    name="mujoco-arm3-rgb",
    views=("front",),
    image_variant="",
    description=ARM3.description + " Observations add a 64x64 RGB image from the 'front' camera.",
)

TASKS = (ARM3, ARM4, ARM3_RGB)


# The image variants' camera frames: a ResNet-18 (ImageNet weights) fine-tuned end to end, 16 tokens
# per view. `hpt-kit convert NAME --image-encoder resnet18` stores frozen features instead.
IMAGE_STEM = StemSpec("image", kind="resnet", options={"arch": "resnet18", "weights": "imagenet"})


def make_embodiment(task: ArmTask) -> Embodiment:
    env = ReachEnv(task)  # only to read sizes off the model
    n = env.n
    image = ImageSpec(task.views, task.image_size, task.image_size) if task.views else None
    return Embodiment(
        name=task.name,
        observation=ObservationSpec(state_dim=env.state_dim, image=image),
        action=ActionSpec(dim=n, low=(-1.0,) * n, high=(1.0,) * n, control_hz=env.control_hz),
        convert_dataset=partial(runner.convert_dataset, task),
        rollout=partial(runner.rollout, task),
        expert_rollout=partial(runner.expert_rollout, task),
        rollout_envs=partial(runner.rollout_envs, task),
        stems=(StemSpec("state"), IMAGE_STEM) if task.views else (StemSpec("state"),),
        head=HeadSpec(action_horizon=4),
        observation_horizon=1,
        max_episode_steps=task.max_steps,
        description=task.description,
    )


def embodiments() -> list[Embodiment]:
    return [make_embodiment(task) for task in TASKS]


@hpt_kit.hookimpl
def hpt_register_embodiments(registry) -> None:
    for embodiment in embodiments():
        registry.add(embodiment)
