"""The ``hpt-kit`` command (typer + rich). Only this package imports rich."""
