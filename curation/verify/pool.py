"""Answer verification that never hangs the caller.

Pipeline for one (gold, response) item:

1. **Extraction** (parent process, regex only, linear time): :func:`curation.verify.extract.extract_answer`
   with the batch's rules (strict by default; ``lenient=True`` adds ``last_math``). Nothing found ->
   ``no_answer``. When the gold lists several values (:func:`curation.verify.rules.several_values`) and the
   response boxes several, the union of its final boxes (:func:`curation.verify.extract.final_boxes`) is
   the answer (the verdict's detail says so).
2. **Fast path** (parent process, no IPC, no sympy): :func:`curation.verify.rules.fast_path` settles
   choice labels, equal strings, plain numbers, plain words and plain expressions in different variables
   (rules in :mod:`curation.verify.rules`). Most items end here; a batch whose items all do starts no worker.
3. **math-verify** (worker processes): ``verify(parse("\\boxed{gold}"), parse("\\boxed{answer}"))`` for
   everything else (expressions, intervals, sets, matrices, equations, units, MC answers given as option
   text - compared with the gold option's text). Parsed golds are cached per worker. One shortcut, after
   ``parse``: two plain expressions with free symbols whose values differ at two fixed sample points
   (:func:`_values_differ`) are ``incorrect`` without math-verify's symbolic search (``simplify`` of the
   difference, ~100 ms for a long wrong answer), which could only end in "not equal"; numbers without
   symbols, relations, sets and anything that does not evaluate stay with math-verify. Identical
   (gold, answer) items of a batch - many rollouts of one prompt give the same answer - are checked once,
   and each worker parses an answer string once. A batch starts at most as many workers as it has items
   for them. The queue runs costly items first (relations, which math-verify may ``solve``, then by length;
   :func:`_schedule`) in chunks that shrink to one item near the end, so no worker idles while another
   finishes a long chunk.

**Deadlines.** Each item has a budget of ``timeout`` seconds inside its worker, enforced with
``signal.setitimer`` in the worker's main thread (math-verify's own ``signal.alarm`` timeouts are turned
off: they take whole seconds and share the same timer). Code stuck in C (``9^9^9^9^9``, a huge factorial
in gmpy) does not see signals, so the parent enforces a **hard** deadline: a worker whose current item has
run ``timeout + grace`` seconds is SIGKILLed and replaced, the item gets ``timeout``, the rest of its chunk
goes back to the queue and the batch goes on. A worker that dies (out of memory, crash) costs its item an
``error`` verdict the same way. Workers also run under an address-space limit (``memory_limit_mb``).

**Threads and processes.** :meth:`Verifier.verify_batch` works from any thread (the parent never touches
signals; batches from different threads are served one after the other under a lock) and from daemonic
processes such as ``DataLoader`` workers. A :class:`Verifier` inherited through ``fork`` notices the new
pid and starts its own workers. Items are sent to workers in chunks (amortising IPC) but every item
reports back on its own, so the per-item deadline is measured from the end of the previous item.

**Start method** (``start_method``): ``"fork"`` (default where available) forks the workers from a
dedicated helper thread; like any fork it copies the caller's memory (only the helper thread carries over
into a worker). A batch starts its first workers as soon as its first item needs math-verify, before
math-verify is imported in the caller: each new worker imports it on its own core while the caller goes on
with the rest of the batch's extraction and fast path (a batch of 5,000 short answers with one math-verify
item no longer waits half a second for the import). Once the pool's first workers exist, the caller imports
math-verify itself before the next fork, so a replacement for a killed worker starts with it loaded. ``"forkserver"`` forks workers from a small server process that has
imported math-verify once - use it when the caller holds a GPU context or must not be forked;
``"spawn"`` pays a full interpreter start per worker. forkserver/spawn re-import the caller's ``__main__``
module in each worker: scripts need the usual ``if __name__ == "__main__":`` guard. ``bench/verify.py
--start-methods`` measures the three.
"""

from __future__ import annotations

import atexit
import math
import multiprocessing as mp
import os
import re
import signal
import threading
import time
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass
from multiprocessing.connection import wait as mp_wait
from typing import Any, Callable, Sequence

from curation.verify.extract import _extract, choice_labels, final_boxes, normalize_answer, resolve_rules
from curation.verify.rules import classify_gold, fast_path, latex_problem, several_values

__all__ = ["STATUSES", "Verdict", "Verifier", "get_verifier", "verify_batch"]

STATUSES = ("correct", "incorrect", "no_answer", "timeout", "error")


@dataclass(frozen=True)
class Verdict:
    """Outcome of one item: ``status`` is one of ``correct``, ``incorrect``, ``no_answer``, ``timeout``,
    ``error``; ``extracted``/``rule`` come from the extraction; ``detail`` says how it was decided (fast
    path or math-verify) or what went wrong."""

    status: str
    extracted: str | None
    rule: str | None
    detail: str | None = None

    @property
    def correct(self) -> bool:
        return self.status == "correct"


# ---------------------------------------------------------------------------------------------------------
# worker process


class _Deadline(BaseException):
    """Raised by the worker's interval timer. A ``BaseException`` so that math-verify's and sympy's
    ``except Exception`` blocks do not swallow it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Deadline()


def _set_pdeathsig() -> None:
    """Linux: get SIGKILL when the parent dies, so no orphan worker survives a killed caller."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except Exception:  # noqa: BLE001 - not Linux: the EOF on the pipe still ends the worker
        pass


def _mapped_bytes() -> int:
    """Virtual memory this process maps now (``VmSize``; 0 where ``/proc`` is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _worker_main(conn: Any, memory_limit_mb: int | None) -> None:
    """Worker loop: receive a chunk ``[(idx, golds, answer, budget), ...]``, send ``(idx, status,
    detail)`` per item. ``None`` or EOF ends the loop."""
    _set_pdeathsig()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    if memory_limit_mb:
        try:
            import resource

            # relative to what the worker already maps: a worker forked from a CUDA process inherits tens
            # of GB of reserved address space, and an absolute limit below that would starve it
            limit = _mapped_bytes() + int(memory_limit_mb) * 1024 * 1024
            _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            if hard == resource.RLIM_INFINITY or hard > limit:
                resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        except (ImportError, ValueError, OSError):
            pass
    import logging

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)
    from math_verify import parse, verify
    from sympy import Basic, MatrixBase

    signal.signal(signal.SIGALRM, _on_alarm)
    cache: OrderedDict[str, list] = OrderedDict()
    try:
        conn.send(("ready", os.getpid()))
    except (BrokenPipeError, OSError):
        return

    def parsed(s: str) -> list:
        got = cache.get(s)
        if got is None:
            got = parse("\\boxed{" + s + "}", parsing_timeout=None)
            cache[s] = got
            if len(cache) > 4096:
                cache.popitem(last=False)
        else:
            cache.move_to_end(s)
        return got

    def check(golds: list[str], answer: str, budget: float) -> tuple[str, str | None]:
        if budget > 0:
            signal.setitimer(signal.ITIMER_REAL, budget)
        try:
            pred = parsed(answer)  # answers repeat too (N rollouts of one prompt): parsed once per worker
            if not pred:
                return "error", "math-verify could not parse the answer"
            gold_ok = False
            shortcut = False
            texts = {x.strip() for x in pred if isinstance(x, str)}  # math-verify also compares the strings
            for g in golds:
                gp = parsed(g)
                gold_ok = gold_ok or any(isinstance(x, (Basic, MatrixBase)) for x in gp)
                same_text = any(isinstance(x, str) and x.strip() and x.strip() in texts for x in gp)
                if gp and pred and not same_text and _values_differ(gp[0], pred[0]):
                    shortcut = True  # not equal: math-verify's symbolic search would end in "no"
                    continue
                if gp and verify(gp, pred, timeout_seconds=None):
                    return "correct", "math-verify"
            # parse() falls back to the raw string when LaTeX parsing fails: no sympy object = invalid
            if not any(isinstance(x, (Basic, MatrixBase)) for x in pred):
                return "error", "math-verify could not parse the answer"
            if not gold_ok:
                return "error", "math-verify could not parse the gold answer"
            return "incorrect", "math-verify (parsed; values differ at sample points)" if shortcut else "math-verify"
        except _Deadline:
            return "timeout", f"math-verify ran past {budget:g}s (soft deadline)"
        except MemoryError:
            return "error", "out of memory"
        except RecursionError:
            return "error", "recursion limit"
        except Exception as e:  # noqa: BLE001 - anything sympy throws becomes an error verdict
            return "error", f"{type(e).__name__}: {str(e)[:200]}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError, _Deadline):
            return
        if msg is None:
            return
        for idx, golds, answer, budget in msg:
            try:
                status, detail = check(golds, answer, budget)
            except _Deadline:  # the timer fired between the try and the finally
                status, detail = "timeout", f"math-verify ran past {budget:g}s (soft deadline)"
            try:
                conn.send((idx, status, detail))
            except (BrokenPipeError, OSError):
                return


# two fixed points (up to 8 symbols), in (1.1, 2.3): positive, away from 0, 1 and the usual poles
_SAMPLE_POINTS = ((1.3137, 1.7213, 1.1529, 2.0411, 1.6182, 2.2279, 1.4821, 1.9023),
                  (1.8862, 1.2345, 2.2719, 1.4471, 1.1917, 1.7707, 2.1351, 1.5563))
_VALUE_RTOL = 1e-6  # about math-verify's float_rounding (6 digits); far above float error


def _values_differ(a: Any, b: Any) -> bool:
    """In a worker, after ``parse``: ``True`` when the parsed gold ``a`` and answer ``b`` are plain sympy
    expressions with free symbols (no relation, set, matrix, tuple) whose values differ - relative
    difference above ``_VALUE_RTOL`` - at each of two fixed sample points (symbols in sorted order get
    values in (1.1, 2.3)). Two expressions that differ at a point are not identical, so math-verify's
    symbolic comparison (``simplify`` of the difference: ~100 ms per wrong answer on long expressions)
    could only say "no"; it is skipped. Numbers without symbols (math-verify's own rounding and percent
    rules apply there), relations, lone symbols (math-verify reads ``east`` and ``e*a*s*t`` as the same
    word) and anything that does not evaluate to a finite number return ``False``: math-verify decides."""
    import sympy
    from sympy.core.relational import Relational

    if not isinstance(a, sympy.Expr) or not isinstance(b, sympy.Expr):
        return False
    if isinstance(a, (Relational, sympy.Symbol)) or isinstance(b, (Relational, sympy.Symbol)):
        return False  # relations: solved by math-verify; a lone symbol may be a word ("\\text{east}" = e*a*s*t)
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols or len(symbols) > len(_SAMPLE_POINTS[0]):
        return False
    for point in _SAMPLE_POINTS:
        subs = {s: sympy.Float(v) for s, v in zip(symbols, point)}
        try:
            x, y = complex(a.evalf(subs=subs)), complex(b.evalf(subs=subs))
        except (TypeError, ValueError, ArithmeticError, AttributeError):
            return False
        if not (math.isfinite(x.real) and math.isfinite(x.imag) and math.isfinite(y.real) and math.isfinite(y.imag)):
            return False
        if abs(x - y) <= _VALUE_RTOL * max(abs(x), abs(y)):
            return False
    return True


# ---------------------------------------------------------------------------------------------------------
# the pool


# a batch's math-verify items are cut into about this many chunks per worker: more chunks balance the
# workers when a few items are slow (a long equation: ~1 s), at one pipe round trip (~0.1 ms) per chunk
_CHUNKS_PER_WORKER = 2


class _Worker:
    __slots__ = ("proc", "conn", "items", "started", "ready", "born")

    def __init__(self, proc: Any, conn: Any):
        self.proc = proc
        self.conn = conn
        self.items: deque = deque()  # items sent and not answered yet, in order
        self.started = 0.0  # when the current (first unanswered) item began
        self.ready = False  # the worker has imported math-verify and said so
        self.born = time.monotonic()


def _default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 16))


class Verifier:
    """A pool of math-verify worker processes with a hard per-item deadline.

    ``workers``: pool size (default: the CPUs this process may use, at most 16); ``start_method``:
    ``fork`` (default where available, see the module docstring) | ``forkserver`` | ``spawn``; ``grace``:
    seconds past ``timeout`` before the hard kill; ``chunk_size``: most items sent to a worker at once; ``memory_limit_mb``: address space each
    worker may add to what it maps at start (``None``: no limit); ``max_answer_chars``: longer extracted
    answers get ``error`` without being parsed; ``start_timeout``: seconds a new worker may take to
    import math-verify; ``soft_deadline=False`` turns off the in-worker timer so that only the parent's
    hard kill bounds an item (tests, measurements).

    Workers start lazily (a batch settled by the fast path starts none) and are created from one
    long-lived helper thread, so their parent-death signal (``PR_SET_PDEATHSIG`` fires when the *thread*
    that forked them ends) is tied to the life of the process, not to the thread that happened to call
    :meth:`verify_batch`. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        start_method: str | None = None,
        grace: float = 0.5,
        chunk_size: int = 16,
        memory_limit_mb: int | None = 4096,
        max_answer_chars: int = 2000,
        start_timeout: float = 120.0,
        soft_deadline: bool = True,
    ):
        self.workers = int(workers) if workers else _default_workers()
        if start_method is None:
            start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        if start_method not in mp.get_all_start_methods():
            raise ValueError(f"start_method {start_method!r} not available here: {mp.get_all_start_methods()}")
        self.start_method = start_method
        self.grace = float(grace)
        self.chunk_size = max(1, int(chunk_size))
        self.memory_limit_mb = memory_limit_mb
        self.max_answer_chars = int(max_answer_chars)
        self.start_timeout = float(start_timeout)
        self.soft_deadline = bool(soft_deadline)
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            # effective if this process has not started its fork server yet: workers then fork from a
            # server that has imported math-verify once
            self._ctx.set_forkserver_preload(["math_verify", "curation.verify.pool"])
        self._lock = threading.RLock()
        self._pool: list[_Worker] = []
        self._pid = os.getpid()
        self._spawner: Any = None
        self.stats = {"fast_path": 0, "math_verify": 0, "duplicates": 0, "killed": 0, "died": 0, "started": 0}
        _INSTANCES.add(self)

    def _forget_after_fork(self) -> None:
        """In a fork child (a DataLoader worker, or one of our own workers): drop the parent's workers
        without touching them, close this process's copies of their pipes, and get a fresh lock (the
        parent's may have been held by another thread at fork time)."""
        for w in self._pool:
            try:
                w.conn.close()
            except OSError:
                pass
        self._pool = []
        self._spawner = None
        self._lock = threading.RLock()
        self._pid = os.getpid()

    # -- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> "Verifier":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; close() is the real API
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def close(self) -> None:
        """Stop all workers (politely, then by force). The verifier stays usable: a later batch starts
        new workers."""
        with self._lock:
            if os.getpid() != self._pid:  # inherited through fork: the workers belong to the parent
                self._pool = []
                self._spawner = None
                return
            pool, self._pool = self._pool, []
            for w in pool:
                try:
                    w.conn.send(None)
                except (OSError, ValueError):
                    pass
            deadline = time.monotonic() + 1.0
            for w in pool:
                w.proc.join(max(0.0, deadline - time.monotonic()))
                if w.proc.is_alive():
                    w.proc.kill()
                    w.proc.join(1.0)
                try:
                    w.conn.close()
                except OSError:
                    pass
            if self._spawner is not None:
                self._spawner.shutdown(wait=False)
                self._spawner = None

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and monitoring)."""
        return [w.proc.pid for w in self._pool if w.proc.is_alive()]

    def _start_worker(self) -> _Worker:
        """Start one worker (from the helper thread); it reports ``ready`` once math-verify is imported."""

        def start() -> _Worker:
            if self.start_method == "fork" and self.stats["started"] >= self.workers:
                # a replacement (or a grown pool): fork with math-verify loaded (imported once here, inherited
                # by every later worker); the first workers import it themselves, in parallel with the caller
                import math_verify  # noqa: F401
            parent_conn, child_conn = self._ctx.Pipe(duplex=True)
            proc = self._ctx.Process(
                target=_worker_main, args=(child_conn, self.memory_limit_mb), name="verify-worker", daemon=True
            )
            cur = mp.current_process()
            was_daemon = cur._config.get("daemon")  # type: ignore[attr-defined]
            if was_daemon:
                # multiprocessing refuses children of daemonic processes (DataLoader workers are daemonic).
                # Ours end with us anyway (PDEATHSIG + EOF on the pipe), so lift the flag for start().
                cur._config["daemon"] = False  # type: ignore[attr-defined]
            try:
                proc.start()
            finally:
                if was_daemon:
                    cur._config["daemon"] = was_daemon  # type: ignore[attr-defined]
            child_conn.close()
            return _Worker(proc, parent_conn)

        from concurrent.futures import ThreadPoolExecutor

        if self._spawner is None:
            self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-spawner")
        try:
            w = self._spawner.submit(start).result()
        except RuntimeError:  # interpreter shutting down: no new threads; start from this thread
            w = start()
        self.stats["started"] += 1
        return w

    def _ensure_pool(self, jobs: int | None = None) -> None:
        """Start workers up to the pool size - or up to ``jobs`` when fewer items need one (a batch with
        one math-verify item starts one worker; a later, larger batch grows the pool)."""
        if os.getpid() != self._pid:  # we are a fork child: forget the parent's workers and helper thread
            self._pool = []
            self._spawner = None
            self._pid = os.getpid()
        for w in [w for w in self._pool if not w.proc.is_alive()]:
            self._retire(w, kill=False)
        want = self.workers if jobs is None else max(1, min(self.workers, jobs))
        while len(self._pool) < want:
            self._pool.append(self._start_worker())

    def _retire(self, w: _Worker, kill: bool) -> None:
        if kill and w.proc.is_alive():
            w.proc.kill()
        w.proc.join(2.0)
        try:
            w.conn.close()
        except OSError:
            pass
        if w in self._pool:
            self._pool.remove(w)

    def _replace(self, w: _Worker, kill: bool = True) -> None:
        self._retire(w, kill=kill)
        self._pool.append(self._start_worker())

    # -- verification ------------------------------------------------------------------------------------

    def verify_batch(
        self,
        golds: Sequence[str],
        responses: Sequence[str],
        *,
        options: Sequence[Sequence[str] | None] | None = None,
        timeout: float = 5.0,
        workers: int | None = None,
        rules: Sequence[str] | None = None,
        lenient: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> list[Verdict]:
        """One :class:`Verdict` per (gold, response), in order. ``options[i]`` (or ``None``) are the
        choices of item ``i``; ``timeout`` is the per-item budget in seconds; ``workers`` resizes the
        pool; ``rules`` / ``lenient``: the extraction rules (:func:`curation.verify.extract.resolve_rules`;
        default strict, ``lenient=True`` adds ``last_math``); ``progress(k)`` is called as items are
        decided (a progress bar for one large batch). Never raises for a bad item: it gets ``error`` /
        ``timeout`` / ``no_answer``."""
        if len(golds) != len(responses):
            raise ValueError(f"verify_batch: {len(golds)} golds but {len(responses)} responses")
        if options is not None and len(options) != len(golds):
            raise ValueError(f"verify_batch: {len(options)} option lists for {len(golds)} items")
        if timeout is None or not (timeout > 0) or math.isinf(timeout):
            raise ValueError(f"verify_batch: timeout must be a positive number of seconds, got {timeout!r}")
        rules = resolve_rules(rules, lenient)
        n = len(golds)
        out: list[Verdict | None] = [None] * n
        jobs: list[tuple[int, list[str], str]] = []
        extractions: dict[int, tuple[str, str | None, str]] = {}
        decided = reported = 0  # fast-path verdicts, and how many of them progress() was told about
        for i in range(n):
            opts = options[i] if options is not None else None
            opts = [str(o) for o in opts] if opts is not None and len(opts) else None
            try:
                verdict, job = self._prepare(golds[i], responses[i], opts, rules)
            except Exception as e:  # noqa: BLE001 - a bad item never kills the batch
                verdict, job = Verdict("error", None, None, f"{type(e).__name__}: {str(e)[:200]}"), None
            if verdict is not None:
                out[i] = verdict
                self.stats["fast_path"] += 1
                decided += 1
            else:
                assert job is not None
                if not jobs and (not workers or int(workers) == self.workers):
                    self._start_early()
                answer, rule, gold_texts, note = job
                extractions[i] = (answer, rule, note)
                jobs.append((i, gold_texts, answer))
            if progress and (i % 256 == 255 or i == n - 1) and decided > reported:
                progress(decided - reported)
                reported = decided
        if jobs:
            # identical (gold, answer) items - many rollouts of one prompt give the same answer - are checked
            # once; the others take the same result
            first: dict[tuple, int] = {}
            copies: dict[int, list[int]] = {}
            unique = []
            for job in jobs:
                key = (tuple(job[1]), job[2])
                if key in first:
                    copies[first[key]].append(job[0])
                else:
                    first[key] = job[0]
                    copies[job[0]] = []
                    unique.append(job)
            self.stats["duplicates"] += len(jobs) - len(unique)
            with self._lock:
                if workers and int(workers) != self.workers:
                    self.close()
                    self.workers = int(workers)
                results = self._run_jobs(unique, float(timeout), progress)
            for i in list(results):
                for j in copies.get(i, []):
                    results[j] = results[i]
                if progress and copies.get(i):
                    progress(len(copies[i]))
            for i, (status, detail) in results.items():
                answer, rule, note = extractions[i]
                out[i] = Verdict(status, answer, rule, (detail or "") + note or None)
                self.stats["math_verify"] += 1
        return [v if v is not None else Verdict("error", None, None, "internal: no result") for v in out]

    def _start_early(self) -> None:
        """Fork one worker now, at the batch's first math-verify item, so that it is importing math-verify
        while this thread decides the rest of the batch; another thread's batch holding the lock just means
        the pool is already up."""
        if self._lock.acquire(blocking=False):
            try:
                self._ensure_pool(1)
            finally:
                self._lock.release()

    def _prepare(
        self, gold: Any, response: Any, opts: list[str] | None, rules: tuple[str, ...]
    ) -> tuple[Verdict | None, tuple[str, str | None, list[str], str] | None]:
        """Extraction + fast path. Returns a final verdict, or the job for a worker."""
        if isinstance(response, bytes):
            response = response.decode("utf-8", errors="replace")
        if not isinstance(response, str):
            return Verdict("no_answer", None, None, f"response is {type(response).__name__}, not text"), None
        ext = _extract(response, opts, rules)
        if ext.answer is None:
            return Verdict("no_answer", None, None, "no extraction rule matched"), None
        answer = ext.answer
        gold_s = "" if gold is None else str(gold)
        if not gold_s.strip():
            return Verdict("error", answer, ext.rule, "empty gold answer"), None
        parsed, _reason = classify_gold(gold_s, opts)
        union = ""
        if ext.rule == "boxed" and several_values(parsed):
            # the gold lists several values and the response may box each one: compare the union of its
            # final boxes (curation.verify.extract.final_boxes) with the gold
            boxes = [normalize_answer(b) for b in final_boxes(response)]
            if len(boxes) > 1:
                answer = ", ".join(b for b in boxes if b)
                union = f" (union of {len(boxes)} final boxes)"
        if len(answer) > self.max_answer_chars:
            return Verdict("error", answer[:200], ext.rule,
                           f"extracted answer is {len(answer)} chars (> {self.max_answer_chars})"), None
        bad_latex = latex_problem(answer)
        if bad_latex:
            return Verdict("error", answer, ext.rule, f"invalid LaTeX in the extracted answer: {bad_latex}"), None
        fast = fast_path(parsed, normalize_answer(gold_s), answer, opts)
        if fast is not None:
            return Verdict(fast[0], answer, ext.rule, fast[1] + union), None
        if parsed is not None and parsed.kind == "choice" and opts:
            gold_texts = [normalize_answer(opts[choice_labels(opts).index(parsed.choice)])]
        else:
            gold_texts = [normalize_answer(gold_s) or gold_s.strip()]
        # math-verify reads "^\circ" but not the degree sign
        gold_texts = [g.replace("°", "^{\\circ}") for g in gold_texts]
        return None, (answer.replace("°", "^{\\circ}"), ext.rule, gold_texts, union)

    def _run_jobs(self, jobs: list[tuple[int, list[str], str]], timeout: float,
                  progress: Callable[[int], None] | None = None) -> dict[int, tuple[str, str | None]]:
        """Distribute jobs over the pool with the hard per-item deadline (caller holds the lock).

        Each worker holds at most one chunk; it answers item by item, and the parent restarts the item
        clock at every answer, so a chunk of 16 items still gives each item ``timeout + grace`` seconds.
        """
        self._ensure_pool(len(jobs))
        queue: deque = deque(_schedule(jobs))
        results: dict[int, tuple[str, str | None]] = {}
        hard = timeout + self.grace
        budget = timeout if self.soft_deadline else 0.0  # 0: no in-worker timer
        start_failures = 0
        told = 0  # results reported to progress()

        def dispatch(w: _Worker) -> None:
            if not w.ready or w.items or not queue:
                return
            # guided chunks: large while much is queued (amortising IPC), one item at a time near the end, so
            # no worker idles while another works through a long chunk
            chunk = max(1, min(self.chunk_size, math.ceil(len(queue) / (_CHUNKS_PER_WORKER * max(1, self.workers)))))
            items = [queue.popleft() for _ in range(min(chunk, len(queue)))]
            try:
                w.conn.send([(i, g, a, budget) for i, g, a in items])
            except (OSError, ValueError):
                queue.extendleft(reversed(items))
                return  # the EOF shows up in the wait loop and the worker is replaced there
            w.items.extend(items)
            w.started = time.monotonic()

        def fail_worker(w: _Worker, status: str, detail: str) -> None:
            """Kill/reap ``w``: its current item gets ``status``; the rest of its chunk is queued again."""
            if w.items:
                first = w.items.popleft()
                results[first[0]] = (status, detail)
                queue.extendleft(reversed(list(w.items)))
                w.items.clear()
            self._replace(w, kill=True)

        while len(results) < len(jobs):
            for w in self._pool:
                dispatch(w)
            waiting = [w for w in self._pool if w.items or not w.ready]
            if not waiting:  # only possible if every worker failed to start
                for i, _g, _a in queue:
                    results[i] = ("error", "no verification worker could be started")
                queue.clear()
                break
            now = time.monotonic()
            deadlines = [w.started + hard if w.ready else w.born + self.start_timeout for w in waiting]
            ready = mp_wait([w.conn for w in waiting], timeout=max(0.0, min(deadlines) - now))
            by_conn = {id(w.conn): w for w in waiting}
            for conn in ready:
                w = by_conn[id(conn)]
                try:
                    while conn.poll():
                        msg = conn.recv()
                        if msg[0] == "ready":
                            w.ready = True
                            start_failures = 0
                            break
                        idx, status, detail = msg
                        if w.items and w.items[0][0] == idx:
                            w.items.popleft()
                        results[idx] = (status, detail)
                        if progress:
                            progress(1)
                            told += 1
                        w.started = time.monotonic()
                        if not w.items:
                            break
                except (EOFError, OSError):
                    w.proc.join(0.5)
                    code = w.proc.exitcode
                    self.stats["died"] += 1
                    if not w.ready:
                        start_failures += 1
                        if start_failures > 2 * self.workers:
                            for i, _g, _a in queue:
                                results[i] = ("error", f"verification workers fail to start (exit code {code})")
                            queue.clear()
                    fail_worker(w, "error", f"worker died (exit code {code})")
            now = time.monotonic()
            for w in list(self._pool):
                if w.items and now - w.started > hard:
                    self.stats["killed"] += 1
                    fail_worker(w, "timeout", f"hard deadline: worker killed after {now - w.started:.1f}s")
                elif not w.ready and now - w.born > self.start_timeout:
                    self.stats["killed"] += 1
                    self._replace(w, kill=True)
        if progress and len(results) > told:  # items settled by a kill or a failed start
            progress(len(results) - told)
        return results


_RELATION = re.compile(r"=|<|>|\\[lg]eq?\b|\\neq?\b|\\approx")


def _cost_hint(golds: Sequence[str], answer: str) -> tuple[int, int]:
    """A rough order of what an item costs math-verify: relations first (``solve``: up to a second), then by
    length (parsing is about linear in it)."""
    text = answer + "".join(golds)
    return (1 if _RELATION.search(text) else 0, len(text))


def _schedule(jobs: list) -> list:
    """Longest first, so the costly items start early and the cheap ones fill the end (a batch otherwise
    waits ~2 s on one worker's last relations while the other is idle); items with the same gold stay
    together, so the worker's parse cache hits."""
    groups: dict[tuple, list] = {}
    for j in jobs:
        groups.setdefault(tuple(j[1]), []).append(j)
    ranked = []
    for gold, items in groups.items():
        items.sort(key=lambda j: _cost_hint(j[1], j[2]), reverse=True)
        ranked.append((_cost_hint(items[0][1], items[0][2]), gold, items))
    ranked.sort(key=lambda r: (-r[0][0], -r[0][1], r[1]))
    return [j for _c, _g, items in ranked for j in items]


_INSTANCES: "weakref.WeakSet[Verifier]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for v in list(_INSTANCES):
        v._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------------------------------------------------
# module-level shared instance

_shared: Verifier | None = None
_shared_lock = threading.Lock()


def get_verifier() -> Verifier:
    """The process-wide shared :class:`Verifier` (created on first use, closed at exit)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Verifier()
            atexit.register(_shared.close)
        return _shared


def verify_batch(
    golds: Sequence[str],
    responses: Sequence[str],
    *,
    options: Sequence[Sequence[str] | None] | None = None,
    timeout: float = 5.0,
    workers: int | None = None,
    rules: Sequence[str] | None = None,
    lenient: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[Verdict]:
    """:meth:`Verifier.verify_batch` on the shared verifier (:func:`get_verifier`)."""
    return get_verifier().verify_batch(golds, responses, options=options, timeout=timeout, workers=workers,
                                       rules=rules, lenient=lenient, progress=progress)
