"""The Sawyer arm on Meta-World v3 tasks as hpt-kit embodiments: ``metaworld`` (MT10),
``metaworld-rgb``, ``metaworld-mt50`` and one ``metaworld-<task>`` per v3 task."""

__version__ = "0.1.0"
