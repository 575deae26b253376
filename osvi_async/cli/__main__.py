"""`python -m osvi_async.cli` runs the `osvi-async` command line."""

from osvi_async.cli import main

main()
