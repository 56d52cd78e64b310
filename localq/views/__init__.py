"""What the CLI and the app both show, built once: Rich renderables and rows of facts.

The front ends (``localq.cli``, ``localq.tui``) call these; they call the
services and the base. They draw nothing themselves: the CLI prints what they
return with a Rich console, the app puts it in its widgets.
"""
