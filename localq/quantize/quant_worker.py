"""The child process that runs llama.cpp's quantizer: ``python -m localq.quantize.quant_worker JSON``.

``llama_model_quantize`` is one long C call: in the parent it could be neither
interrupted (Ctrl-C waits for it) nor watched. In a child, the parent reads the
log it prints on stdout (progress, fallbacks, the cause of a failure) and can
kill it at once. The JSON argument holds ``src``, ``dst``, ``ftype``,
``threads`` and ``allow_requantize``. The child loads llama.cpp, then waits for
``go`` on stdin, so the parent can start it first and do its own checks while
the library loads. Exit status 0 is success.
"""

from __future__ import annotations

import ctypes
import json
import signal
import sys


def main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent decides; a terminal Ctrl-C just ends this child
    import llama_cpp

    @llama_cpp.llama_log_callback
    def on_log(level, text, user_data):
        sys.stdout.write((text or b"").decode("utf-8", "replace"))
        sys.stdout.flush()

    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    if sys.stdin.readline().strip() != "go":
        return 4  # the parent refused the job or went away
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(args["ftype"])
    params.nthread = int(args["threads"])
    params.allow_requantize = bool(args["allow_requantize"])
    rc = llama_cpp.llama_model_quantize(args["src"].encode(), args["dst"].encode(), ctypes.byref(params))
    sys.stdout.flush()
    return 0 if rc == 0 else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
