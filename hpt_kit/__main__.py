"""``python -m hpt_kit`` (and ``torchrun -m hpt_kit``) runs the ``hpt-kit`` command."""

from hpt_kit.cli.app import main

if __name__ == "__main__":
    main()
