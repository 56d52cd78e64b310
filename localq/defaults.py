"""The context sizes localq assumes, defined once for the recommender, the backends and the CLI.

- ``DEFAULT_CONTEXT``: 4096 tokens (Ollama's and LM Studio's default), or the
  model's own trained context when that is shorter. Memory estimates, the
  llama.cpp backend and ``--ctx``'s help all use it.
- ``MIN_CONTEXT``: 256 tokens, the least a chat turn needs (a system prompt, a
  question and a short reply); ``--ctx`` below it is refused, by the
  recommender and by the backends alike.
"""

DEFAULT_CONTEXT = 4096
MIN_CONTEXT = 256
