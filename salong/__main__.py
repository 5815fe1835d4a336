"""`python -m salong ...` (and `torchrun ... -m salong train ...`): the `salong` command."""

from salong.cli import main

if __name__ == "__main__":
    main()
