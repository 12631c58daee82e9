"""`python -m batch` runs the lmbatch command line."""

from batch.cli import main

main()
