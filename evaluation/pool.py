"""A process pool with a hard wall-clock limit per task.

Signals cannot interrupt a thread, and sympy can sit in one C-level big-integer operation for hours, so
each task runs in a worker process that is killed (SIGKILL) and replaced when its task overruns.
Workers are fresh interpreters (``python -m evaluation.pool``), not forks: they hold none of the
parent's threads or locks (torch, tqdm, MLflow), and starting them never re-imports the caller's main
script. Each worker gets a memory cap. Messages are pickles over two pipes.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import weakref
from collections import deque
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Sequence

TIMEOUT = "timeout"
CRASH = "crash"
_READY = "__ready__"
_ROOT = str(Path(__file__).resolve().parents[1])


def _set_memory_cap(extra_bytes: int) -> None:
    try:
        import resource

        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        cap = vm + extra_bytes
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except Exception:  # not Linux: the time limit still applies
        pass


def worker_main(read_fd: int, write_fd: int, target: str, memory_bytes: int) -> None:
    """Worker loop: receive (index, args), reply (index, (ok, result)); None stops."""
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    module, name = target.split(":")
    fn = getattr(importlib.import_module(module), name)
    _set_memory_cap(memory_bytes)
    outbox.send(_READY)
    while True:
        try:
            msg = inbox.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        idx, args = msg
        try:
            result = (True, fn(*args))
        except MemoryError:
            result = (False, "MemoryError")
        except RecursionError:
            result = (False, "RecursionError")
        except Exception as exc:
            result = (False, f"{type(exc).__name__}: {str(exc)[:200]}")
        try:
            outbox.send((idx, result))
        except (EOFError, OSError):
            return


class _Worker:
    def __init__(self, target: str, memory_bytes: int, preload: Sequence[str]):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([_ROOT, *filter(None, [env.get("PYTHONPATH")])])
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = "1"
        code = (
            "import importlib,sys\n"
            f"for m in {list(preload)!r}: importlib.import_module(m)\n"
            "from evaluation.pool import worker_main\n"
            f"worker_main({to_child_r}, {from_child_w}, {target!r}, {memory_bytes})\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the parent only; it stops us
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.outbox = Connection(to_child_w, readable=False)
        self.inbox = Connection(from_child_r, writable=False)
        self.ready = False
        self.task: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:
            pass
        for c in (self.inbox, self.outbox):
            try:
                c.close()
            except Exception:
                pass


def _shutdown(workers: list) -> None:
    for w in workers:
        try:
            w.outbox.send(None)
        except Exception:
            pass
    deadline = time.monotonic() + 1.0
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.01, deadline - time.monotonic()))
        except Exception:
            pass
        w.kill()
    workers.clear()


class TimeoutPool:
    """Run ``target(*args)`` ("module:function") for many argument tuples, each with a time limit.

    `map` returns, per task, ``(True, result)``, ``(False, "timeout")``, ``(False, "crash")`` (the worker
    died) or ``(False, "<exception>")``; the pool itself carries on.
    """

    def __init__(self, target: str, workers: int | None = None, timeout: float = 3.0, preload: Sequence[str] = (), memory_gb: float = 4.0):
        self.target = target
        self.n_workers = max(1, workers or os.cpu_count() or 1)
        self.timeout = float(timeout)
        self.memory_bytes = int(memory_gb * 2**30)
        self.preload = list(preload)
        self.workers: list[_Worker] = []
        self.restarts = 0
        self._failed_starts = 0
        self._finalizer = weakref.finalize(self, _shutdown, self.workers)

    def _spawn(self) -> _Worker:
        w = _Worker(self.target, self.memory_bytes, self.preload)
        self.workers.append(w)
        return w

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self.workers.remove(w)
        self.restarts += 1
        self._spawn()

    def start(self) -> None:
        """Start the workers now (they take ~0.5 s to import sympy), e.g. while data loads."""
        while len(self.workers) < self.n_workers:
            self._spawn()

    def map(self, tasks: Sequence[tuple], progress=None) -> list[tuple[bool, Any]]:
        """Results in task order. `progress`: an object with ``update(n)`` (e.g. tqdm), or None."""
        results: list = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        while len(self.workers) < min(self.n_workers, max(1, len(tasks))):
            self._spawn()
        done = 0
        crashes: dict[int, int] = {}

        def finish(idx: int, result) -> None:
            nonlocal done
            results[idx] = result
            done += 1
            if progress is not None:
                progress.update(1)

        start_limit = time.monotonic() + 120  # no worker ready for this long: the pool is broken
        while done < len(tasks):
            for w in list(self.workers):
                if w.ready and w.task is None and pending:
                    idx = pending.popleft()
                    try:
                        w.outbox.send((idx, tasks[idx]))
                    except (OSError, EOFError, ValueError):
                        pending.appendleft(idx)
                        self._replace(w)
                        continue
                    w.task, w.deadline = idx, time.monotonic() + self.timeout
            now = time.monotonic()
            busy = [w.deadline - now for w in self.workers if w.task is not None]
            ready = wait([w.inbox for w in self.workers], timeout=max(0.0, min(busy + [1.0])))
            by_conn = {w.inbox: w for w in self.workers}
            for conn in ready:
                w = by_conn.get(conn)
                if w is None:
                    continue
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    if not w.ready:
                        self._failed_starts += 1
                        if self._failed_starts > 5:
                            raise RuntimeError("grader workers die on start-up (see their stderr)") from None
                    if w.task is not None:
                        # A worker can die of something else than its task (killed from outside, OOM
                        # after an earlier task): retry once on a fresh worker, then count it wrong.
                        crashes[w.task] = crashes.get(w.task, 0) + 1
                        if crashes[w.task] < 2:
                            pending.appendleft(w.task)
                        else:
                            finish(w.task, (False, CRASH))
                    self._replace(w)
                    continue
                if msg == _READY:
                    w.ready = True
                    self._failed_starts = 0
                    continue
                idx, result = msg
                if idx == w.task:
                    w.task = None
                    finish(idx, result)
            now = time.monotonic()
            for w in list(self.workers):
                if w.task is not None and now > w.deadline:
                    finish(w.task, (False, TIMEOUT))
                    self._replace(w)
            if any(w.ready for w in self.workers):
                start_limit = now + 120
            elif now > start_limit:
                raise RuntimeError("grader workers failed to start within 120 s")
        return results

    def close(self) -> None:
        self._finalizer()
