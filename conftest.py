"""Applies to every test folder (the kit's and the plugin packages'): headless rendering is chosen
before anything imports mujoco or hpt_kit."""

import os

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
