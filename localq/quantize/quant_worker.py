"""The child process that runs llama.cpp's quantizer: ``python -m localq.quantize.quant_worker``.

``llama_model_quantize`` is one long C call: in the parent it could be neither
interrupted (Ctrl-C waits for it) nor watched. In a child, the parent reads the
log it prints on stdout (progress, fallbacks, the cause of a failure) and can
kill it at once. The child loads llama.cpp first, then reads its job from
stdin: one line of JSON with ``src``, ``dst``, ``ftype`` (the name of a
``llama_cpp`` file-type constant, so the parent never imports llama.cpp),
``threads`` and ``allow_requantize``. So the parent can start it ahead of need
and do its own work (opening the index, checking the source) while the library
loads. An empty line or end of input (the parent refused the job or went away)
ends it with status 4; 0 is success, 3 a failed quantization.

It loads only llama-cpp-python's ctypes bindings (``llama_cpp.llama_cpp``), not
the package: ``import llama_cpp`` runs its ``__init__``, which imports the
high-level ``Llama`` class with numpy, jinja2 and the chat formats, about
0.15 s of a quantization's start that the quantizer does not use.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import signal
import sys
import types


def bindings():
    """llama-cpp-python's ctypes module, loaded without running the package's ``__init__``.

    The package is registered as an empty namespace over its own directory, so
    ``llama_cpp.llama_cpp`` and the submodules it imports load as usual. If
    that fails (another layout of the package), the package is imported whole.
    """
    spec = importlib.util.find_spec("llama_cpp")
    if spec is not None and spec.submodule_search_locations:
        package = types.ModuleType("llama_cpp")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__, package.__file__ = spec, spec.origin
        sys.modules["llama_cpp"] = package
        try:
            from llama_cpp import llama_cpp as lib

            return lib
        except Exception:  # noqa: BLE001 - fall back to the whole package below
            for name in [n for n in sys.modules if n == "llama_cpp" or n.startswith("llama_cpp.")]:
                del sys.modules[name]
    import llama_cpp

    return llama_cpp


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent decides; a terminal Ctrl-C just ends this child
    llama_cpp = bindings()

    @llama_cpp.llama_log_callback
    def on_log(level, text, user_data):
        sys.stdout.write((text or b"").decode("utf-8", "replace"))
        sys.stdout.flush()

    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    line = sys.stdin.readline().strip()
    if not line:
        return 4
    args = json.loads(line)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(getattr(llama_cpp, args["ftype"]))
    params.nthread = int(args["threads"])
    params.allow_requantize = bool(args["allow_requantize"])
    rc = llama_cpp.llama_model_quantize(args["src"].encode(), args["dst"].encode(), ctypes.byref(params))
    sys.stdout.flush()
    return 0 if rc == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
