"""`python -m spoolvault` is the `spoolvault` command."""

from spoolvault.cli import main

main()
