"""``python -m localq.cli``: the ``localq`` command."""

from localq.cli import main

main()
