"""``python -m harness`` (also what torchrun launches)."""

from harness.cli import main

main()
