"""Chatting with a model: a conversation (its turns, recorded) and the history of stored chats.

The prompt's template and its fitting into the context window belong to the
backends (``localq.backends.templates``, ``localq.backends.context``); the
line-mode chat is terminal UI (``localq.cli.repl``).
"""
