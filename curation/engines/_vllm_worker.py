"""Worker subprocess for :class:`curation.engines.vllm.VLLMEngine` (run by the vLLM interpreter).

``python -m curation.engines._vllm_worker READ_FD WRITE_FD``.  Protocol: length-prefixed pickled dicts on
two pipes (``multiprocessing.connection.Connection``):

* ``{"cmd": "init", "kwargs": {...}}`` -> ``{"status": "ok", "result": {"vision": bool, ...}}``
* ``{"cmd": "generate", "requests": [encoded requests], "params": SamplingConfig dict}``
  -> ``{"status": "ok", "result": [[completion dicts] per request]}``
* ``{"cmd": "close"}`` -> exits.

Any exception is answered with ``{"status": "error", "traceback": ...}``; the worker keeps serving after a
failed ``generate`` but exits after a failed ``init``.  Its stdout/stderr (vLLM's logs) go to a log file
chosen by the parent.
"""

from __future__ import annotations

import pickle
import sys
import traceback
from multiprocessing.connection import Connection


def _reply(conn: Connection, msg: dict) -> None:
    conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))


def watch_parent(interval: float = 1.0) -> None:
    """Daemon thread: when the process that started this worker dies (``kill -9``, a SIGTERM it did not
    pass on), kill this worker's own children (vLLM's engine-core processes) and exit, so no orphan keeps
    the model's memory. The EOF on the command pipe covers a parent that dies while the worker waits for a
    command; this covers one that dies in the middle of a long ``generate``. Polls ``os.getppid()`` (not
    ``PR_SET_PDEATHSIG``, which fires when the parent's *thread* that started the worker exits)."""
    import os
    import threading
    import time

    parent = os.getppid()

    def run() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                try:
                    import psutil

                    for child in psutil.Process().children(recursive=True):
                        try:
                            child.kill()
                        except psutil.Error:
                            pass
                except ImportError:
                    pass
                os._exit(1)

    threading.Thread(target=run, name="parent-watch", daemon=True).start()


def serve(read_fd: int, write_fd: int) -> int:
    from curation.engines.base import SamplingConfig
    from curation.engines.vllm import _LocalVLLM, decode_request

    recv = Connection(read_fd, writable=False)
    send = Connection(write_fd, readable=False)
    engine = None
    while True:
        try:
            msg = pickle.loads(recv.recv_bytes())
        except EOFError:  # parent went away
            break
        cmd = msg.get("cmd")
        if cmd == "close":
            break
        try:
            if cmd == "init":
                engine = _LocalVLLM(**msg["kwargs"])
                import vllm

                _reply(send, {"status": "ok", "result": {"vision": engine.vision, "vllm": vllm.__version__}})
            elif cmd == "generate":
                if engine is None:
                    raise RuntimeError("generate before init")
                params = msg["params"]
                params["stop"] = tuple(params["stop"]) if params.get("stop") else None
                requests = [decode_request(d) for d in msg["requests"]]
                out = engine.generate(requests, SamplingConfig(**params))
                _reply(send, {"status": "ok", "result": [[c.to_dict() for c in row] for row in out]})
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception:  # noqa: BLE001 - reported to the parent
            tb = traceback.format_exc()
            print(tb, file=sys.stderr, flush=True)
            _reply(send, {"status": "error", "traceback": tb})
            if cmd == "init":
                return 1
    if engine is not None:
        engine.close()
    return 0


if __name__ == "__main__":
    watch_parent()
    sys.exit(serve(int(sys.argv[1]), int(sys.argv[2])))
