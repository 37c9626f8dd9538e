"""`python -m mlstack.cli`: the `mlstack` command."""

from mlstack.cli import main

main()
