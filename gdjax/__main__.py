"""`python -m gdjax ...`: the same as the installed `gdjax` command."""

from gdjax.study.command import main

if __name__ == "__main__":
    raise SystemExit(main())
