"""``python -m layouttool``."""

from layouttool.cli import main

main()
