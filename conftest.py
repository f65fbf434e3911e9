"""Applies to every test folder (the kit's and the plugin packages'): headless rendering is chosen
before anything imports mujoco or hpt_kit."""

import os

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import hpt_kit  # noqa: E402,F401 - loads triton before any test can import mujoco (see hpt_kit/_preload.py)
