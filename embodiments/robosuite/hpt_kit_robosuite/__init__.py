"""robosuite 1.5 arms as hpt-kit embodiments: ``robosuite-<arm>`` (Lift) and ``robosuite-<arm>-stack``
(Stack) for Panda, Sawyer, IIWA, Jaco, Kinova3 and UR5e."""

__version__ = "0.1.0"
