"""`python -m raylb ...` is the same as the `raylb` command."""

from raylb.cli import main

if __name__ == "__main__":
    main()
