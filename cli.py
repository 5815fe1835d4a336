"""Launcher for `python cli.py ...` from a checkout; the CLI itself is `salong.cli`
(installed as the `salong` command, also `python -m salong`)."""

from salong.cli import main

if __name__ == "__main__":
    main()
