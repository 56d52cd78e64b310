"""Chatting with a model: templates, context trimming, conversations, history and the line-mode REPL."""
