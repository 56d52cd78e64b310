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
"""

from __future__ import annotations

import ctypes
import json
import signal
import sys


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent decides; a terminal Ctrl-C just ends this child
    import llama_cpp

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
