"""Hostile chat templates: each failure is one line naming the model; slow ones are stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import bad_gguf
import pytest

from localq.backends.templates import RENDER_TIMEOUT_S, ChatTemplate
from localq.errors import BackendError

MESSAGES = [{"role": "user", "content": "hi"}]
LOCALQ = [sys.executable, "-c", "from localq.cli import main; main()"]

# name -> (template, words the error must hold)
HOSTILE = {
    "attribute-escape": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "stopped by the sandbox"),
    "globals-escape": ("{{ cycler.__init__.__globals__ }}", "stopped by the sandbox"),
    "huge-range": ("{% for i in range(200000) %}{% endfor %}", "OverflowError"),
    "huge-number": ("{% for i in range(10**12) %}{% endfor %}", "a number over"),
    "deep-recursion": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "RecursionError"),
    "slow-loop": ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
                  f"ran for more than {RENDER_TIMEOUT_S:g} s"),
    "memory-bomb": ("{{ 'x' * 10**9 }}", "would build more than"),
    "power-bomb": ("{% set n = 99 %}{{ n ** 99999 }}", "exponent"),
    "center-bomb": ("{{ 'x'.center(10**11) }}", "a number over"),
    "type-error": ("{{ messages + 1 }}", "TypeError"),
    "undefined": ("{{ nothing.here }}", "undefined"),
    "syntax": ("{% for %}", "not valid Jinja2"),
    "raise": ("{{ raise_exception('only user turns') }}", "only user turns"),
    "not-closed": ("{% if true %}", "not valid Jinja2"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_template_is_one_line_naming_the_model(name):
    source, expected = HOSTILE[name]
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        ChatTemplate(source, model_name="evil:q4_1").render(MESSAGES)
    message = caught.value.one_line()
    print(message)
    assert message.startswith("evil:q4_1's chat template") and expected in message and "\n" not in message
    assert time.monotonic() - started < 60   # a bound, not a speed claim: it stops at all


def test_the_time_bound_leaves_the_trace_hook_as_it_was():
    before = sys.gettrace()
    with pytest.raises(BackendError):
        ChatTemplate(HOSTILE["slow-loop"][0]).render(MESSAGES)
    assert sys.gettrace() is before
    assert ChatTemplate(None).render(MESSAGES).startswith("<|im_start|>user")


@pytest.mark.parametrize("name", ["type-error", "attribute-escape", "slow-loop"])
def test_run_with_a_hostile_template_prints_one_line(name, smollm2_gguf, tmp_path, tmp_home):
    """Before: ``run`` ended in a traceback (the prompt was encoded outside the try)."""
    pytest.importorskip("llama_cpp")
    copy = bad_gguf.with_template(smollm2_gguf, tmp_path / f"{name}.gguf", HOSTILE[name][0], data="copy")
    env = {**os.environ, "LOCALQ_HOME": str(tmp_home)}
    done = subprocess.run(LOCALQ + ["run", str(copy), "hi", "--max-tokens", "4"], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    print(done.stderr)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "chat template" in lines[0] and copy.name in lines[0]
