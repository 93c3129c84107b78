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
import threading
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


class _Task:
    __slots__ = ("args", "call", "index", "crashes")

    def __init__(self, args: tuple, call: "_Call", index: int):
        self.args, self.call, self.index, self.crashes = args, call, index, 0


class _Call:
    """One `map` call: its results fill in as workers answer; the caller waits on `done`."""

    def __init__(self, n: int, progress):
        self.results: list = [None] * n
        self.left = n
        self.progress = progress
        self.error: BaseException | None = None
        self.done = threading.Event()
        if n == 0:
            self.done.set()

    def finish(self, index: int, result) -> None:
        self.results[index] = result
        self.left -= 1
        if self.progress is not None:
            self.progress.update(1)
        if self.left == 0:
            self.done.set()

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class _Dispatcher:
    """The workers and one thread that hands them tasks, from every `map` call at once.

    Callers only queue tasks and wait: a slow task holds its worker, never another caller (a grader shared by
    the 64 agent threads of a rollout engine would otherwise stall all of them behind one sympy timeout). The
    thread wakes on a worker's answer, a deadline, or a self-pipe written when tasks are queued."""

    def __init__(self, target: str, n_workers: int, timeout: float, memory_bytes: int, preload: Sequence[str]):
        self.target, self.n_workers, self.timeout = target, n_workers, timeout
        self.memory_bytes, self.preload = memory_bytes, list(preload)
        self.workers: list[_Worker] = []
        self.restarts = 0
        self._failed_starts = 0
        self._pending: deque[_Task] = deque()
        self._running: set[_Call] = set()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---- callers
    def submit(self, tasks: Sequence[tuple], progress) -> _Call:
        call = _Call(len(tasks), progress)
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is closed")
            if tasks:
                self._running.add(call)
                self._pending.extend(_Task(t, call, i) for i, t in enumerate(tasks))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="timeout-pool", daemon=True)
                self._thread.start()
        os.write(self._wake_w, b"x")
        return call

    def start(self) -> None:
        with self._lock:
            while len(self.workers) < self.n_workers:
                self._spawn()

    # ---- the dispatch thread
    def _spawn(self) -> _Worker:
        w = _Worker(self.target, self.memory_bytes, self.preload)
        self.workers.append(w)
        return w

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self.workers.remove(w)
        self.restarts += 1
        self._spawn()

    def _finish(self, task: _Task, result) -> None:
        task.call.finish(task.index, result)
        if task.call.done.is_set():
            self._running.discard(task.call)

    def _fail_all(self, error: BaseException) -> None:
        for call in list(self._running):
            call.fail(error)
        self._running.clear()
        self._pending.clear()
        for w in self.workers:
            w.task = None

    def _loop(self) -> None:
        start_limit = time.monotonic() + 120  # no worker ready for this long: the pool is broken
        while True:
            with self._lock:
                if self._closed:
                    return
                busy_or_queued = bool(self._pending) or any(w.task is not None for w in self.workers)
                want = min(self.n_workers, max(1, len(self._pending) + sum(w.task is not None for w in self.workers)))
                while busy_or_queued and len(self.workers) < want:
                    self._spawn()
                for w in list(self.workers):
                    if w.ready and w.task is None and self._pending:
                        task = self._pending.popleft()
                        try:
                            w.outbox.send((0, task.args))
                        except (OSError, EOFError, ValueError):
                            self._pending.appendleft(task)
                            self._replace(w)
                            continue
                        w.task, w.deadline = task, time.monotonic() + self.timeout
                workers = list(self.workers)
            now = time.monotonic()
            busy = [w.deadline - now for w in workers if w.task is not None]
            ready = wait([w.inbox for w in workers] + [self._wake_r], timeout=max(0.0, min(busy + [1.0])))
            with self._lock:
                if self._closed:
                    return
                if self._wake_r in ready:
                    os.read(self._wake_r, 4096)
                try:
                    self._collect([c for c in ready if c != self._wake_r])
                except RuntimeError as exc:
                    self._fail_all(exc)
                    continue
                now = time.monotonic()
                for w in list(self.workers):
                    if w.task is not None and now > w.deadline:
                        self._finish(w.task, (False, TIMEOUT))
                        w.task = None
                        self._replace(w)
                if any(w.ready for w in self.workers) or not (self._pending or self._running):
                    start_limit = now + 120
                elif now > start_limit:
                    self._fail_all(RuntimeError("grader workers failed to start within 120 s"))

    def _collect(self, ready) -> None:
        by_conn = {w.inbox: w for w in self.workers}
        for conn in ready:
            w = by_conn.get(conn)
            if w is None:
                continue
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                task, w.task = w.task, None
                self._replace(w)
                if not w.ready:
                    self._failed_starts += 1
                    if self._failed_starts > 5:
                        if task is not None:
                            self._pending.appendleft(task)
                        raise RuntimeError("grader workers die on start-up (see their stderr)") from None
                if task is not None:
                    # A worker can die of something else than its task (killed from outside, OOM after an
                    # earlier task): retry once on a fresh worker, then count it wrong.
                    task.crashes += 1
                    if task.crashes < 2:
                        self._pending.appendleft(task)
                    else:
                        self._finish(task, (False, CRASH))
                continue
            if msg == _READY:
                w.ready = True
                self._failed_starts = 0
                continue
            _, result = msg
            if w.task is not None:
                task, w.task = w.task, None
                self._finish(task, result)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._fail_all(RuntimeError("the pool was closed"))
        os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        _shutdown(self.workers)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


class TimeoutPool:
    """Run ``target(*args)`` ("module:function") for many argument tuples, each with a time limit.

    `map` returns, per task, ``(True, result)``, ``(False, "timeout")``, ``(False, "crash")`` (the worker
    died) or ``(False, "<exception>")``; the pool itself carries on. Several threads may call `map` at once:
    their tasks share the workers, and one caller's slow task holds only the worker it runs on.
    """

    def __init__(self, target: str, workers: int | None = None, timeout: float = 3.0, preload: Sequence[str] = (), memory_gb: float = 4.0):
        self.target = target
        self.n_workers = max(1, workers or os.cpu_count() or 1)
        self.timeout = float(timeout)
        self.memory_bytes = int(memory_gb * 2**30)
        self.preload = list(preload)
        self._dispatcher = _Dispatcher(target, self.n_workers, self.timeout, self.memory_bytes, self.preload)
        self._finalizer = weakref.finalize(self, self._dispatcher.close)

    @property
    def workers(self) -> list[_Worker]:
        return self._dispatcher.workers

    @property
    def restarts(self) -> int:
        return self._dispatcher.restarts

    def start(self) -> None:
        """Start the workers now (they take ~0.5 s to import sympy), e.g. while data loads."""
        self._dispatcher.start()

    def map(self, tasks: Sequence[tuple], progress=None) -> list[tuple[bool, Any]]:
        """Results in task order. `progress`: an object with ``update(n)`` (e.g. tqdm), or None."""
        call = self._dispatcher.submit(list(tasks), progress)
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.results

    def close(self) -> None:
        self._finalizer()
