"""The model's tokenizer and chat template, from its Hugging Face tokenizer files.

``tokenizer.json`` is run by the ``tokenizers`` library; the chat template
and the special tokens come from ``tokenizer_config.json`` and are rendered by
localq's sandboxed template renderer, the same one the llama.cpp backend
uses. The reply stops at any end-of-generation id the files declare
(``eos_token`` and ``generation_config.json``'s ``eos_token_id``).

This is the one module of the backend that imports ``localq.chat``.
"""

from __future__ import annotations

import json
from pathlib import Path

from localq.errors import BackendError


def _text(token) -> str:
    return token.get("content", "") if isinstance(token, dict) else (token or "")


class ModelTokenizer:
    def __init__(self, model_dir: Path):
        from tokenizers import Tokenizer

        from localq.backends.templates import ChatTemplate

        model_dir = Path(model_dir)
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise BackendError(f"{model_dir} has no tokenizer.json", "the model directory is incomplete")
        self.tok = Tokenizer.from_file(str(path))
        cfg_path = model_dir / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        bos, eos = _text(cfg.get("bos_token")), _text(cfg.get("eos_token"))
        self.template = ChatTemplate(cfg.get("chat_template"), bos_token=bos, eos_token=eos)
        self.eos_ids = set()
        if eos and self.tok.token_to_id(eos) is not None:
            self.eos_ids.add(self.tok.token_to_id(eos))
        gen_path = model_dir / "generation_config.json"
        if gen_path.is_file():
            ids = json.loads(gen_path.read_text()).get("eos_token_id")
            self.eos_ids.update(ids if isinstance(ids, list) else [ids] if ids is not None else [])

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_chat(self, messages) -> list[int]:
        return self.encode(self.template.render(messages, add_generation_prompt=True))

    def decode(self, ids) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)
