"""Fan-out: call one function on many items in worker processes or on a Dask cluster (DESIGN.md §8).

One replay is single-threaded by design; sweeps and many-tape drift checks run many
at once. :func:`fan_out` hides where they run: a local ``ProcessPoolExecutor``
(spawned, not forked), a Dask cluster via ``distributed``, or this process
(``workers=0``, for debugging and notebooks). Every call is guarded in the worker,
so an exception comes back as one line of text in an :class:`Outcome` (some
exception types do not survive pickling), and a failed call is retried before
it is reported. Nothing here knows about replays.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import signal
import socket
import time
import traceback
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import msgspec

from perpsim.core.errors import InputError, PerpsimError

__all__ = ["Outcome", "ProgressBar", "connect_scheduler", "error_text", "fan_out", "worker_name"]

_ADDRESS = re.compile(r"(?:(?:tcp|tls|ws|wss|ucx)://)?(?:\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):\d{1,5}")


class Outcome(msgspec.Struct, kw_only=True):
    """What one attempt of a fanned-out call gave: a value, or one line of error text."""

    ok: bool
    value: Any = None
    error: str = ""
    worker: str = ""


def worker_name() -> str:
    """``host:pid`` of this process: where a result was computed (never part of a result's identity)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def error_text(exc: BaseException, *, where: bool = True) -> str:
    """One line for a results table: type and message, and for unexpected errors the raising frame."""
    msg = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    if where and not isinstance(exc, PerpsimError):
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            f = frames[-1]
            text += f" (at {Path(f.filename).name}:{f.lineno} in {f.name})"
    return text


def _guarded(func: Callable[[Any], Any], item: Any) -> Outcome:
    """Run ``func(item)`` in a worker; every exception becomes text, which always unpickles."""
    try:
        return Outcome(ok=True, value=func(item), worker=worker_name())
    except Exception as exc:
        return Outcome(ok=False, error=error_text(exc), worker=worker_name())


def connect_scheduler(scheduler: str, timeout: float = 10.0) -> Any:
    """A ``distributed.Client`` connected to ``scheduler`` with at least one worker.

    Close it when done. Raises within about ``timeout`` seconds rather than hanging.

    Raises:
        InputError: a malformed address, no scheduler there, or no workers.
    """
    import distributed

    if not _ADDRESS.fullmatch(scheduler):
        raise InputError(f"scheduler address {scheduler!r}: expected tcp://HOST:PORT (or tls://, or HOST:PORT)")
    new_client: Any = distributed.Client
    try:
        client: Any = new_client(scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"cannot reach Dask scheduler {scheduler} within {timeout:g} s: {reason}") from exc
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        client.close()
        raise InputError(f"Dask scheduler {scheduler} has no workers (waited {timeout:g} s)") from exc
    return client


def fan_out(
    func: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    connect_timeout: float = 10.0,
    retries: int = 1,
) -> Generator[tuple[int, Outcome, int], None, None]:
    """Call ``func`` on every item in parallel, yielding ``(index, outcome, attempts)`` as they finish.

    ``func`` must be importable by name (a module-level function) and items
    picklable, since both travel to other processes. A call that raises, or whose
    worker dies, is retried up to ``retries`` times; the last failure is yielded
    as ``Outcome(ok=False, error=...)``, never raised. Sweeps use this; so can any
    many-tapes check (``drift --many``).

    Args:
        func: the work, ``func(item) -> value``.
        items: the inputs.
        workers: processes of the local pool (default: the cores this process may
            use, :func:`perpsim.tapes.reader.cores`); 0 runs
            the calls one by one in this process (debugging, notebooks).
        scheduler: a Dask scheduler address (``tcp://host:port``); replaces the pool.
        client: a connected ``distributed.Client`` to use instead (left open).
        connect_timeout: seconds to reach the scheduler and see a worker.
        retries: extra attempts for a failing call.

    Raises:
        InputError: the scheduler cannot be reached or has no workers.
    """
    if not items:
        return
    if client is not None:
        yield from _fan_out_dask(func, items, client, retries)
    elif scheduler is not None:
        own = connect_scheduler(scheduler, connect_timeout)
        try:
            yield from _fan_out_dask(func, items, own, retries)
        finally:
            own.close()
    elif workers == 0:
        for i, item in enumerate(items):
            attempt = 1
            out = _guarded(func, item)
            while not out.ok and attempt <= retries:
                attempt += 1
                out = _guarded(func, item)
            yield i, out, attempt
    else:
        from perpsim.tapes.reader import cores

        n = workers if workers is not None else cores()
        if n < 0:
            raise InputError(f"workers must be >= 0, not {n}")
        yield from _fan_out_pool(func, items, min(n, len(items)), retries)


def _worker_start() -> None:
    """A pool worker's start: Ctrl-C reaches the whole process group, and the parent stops
    the sweep and says so; a worker just ends (an idle one would print a traceback)."""
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))


def _fan_out_pool(
    func: Callable[[Any], Any], items: Sequence[Any], n: int, retries: int
) -> Generator[tuple[int, Outcome, int], None, None]:
    # spawn, not fork: the parent may hold threads (polars, rich) that fork would copy mid-lock.
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_start)
    pending: dict[Future[Outcome], tuple[int, int]] = {}
    served = 0  # calls the current pool finished
    dead_streak = 0  # pools in a row that died before finishing any call

    def submit(i: int, attempt: int) -> None:
        pending[pool.submit(_guarded, func, items[i])] = (i, attempt)

    try:
        for i in range(len(items)):
            submit(i, 1)
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                # One dead process breaks the whole pool: every pending call fails with it.
                done, _ = wait(list(pending))
            served += sum(f.exception() is None for f in done)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                dead_streak = dead_streak + 1 if served == 0 else 0
                if dead_streak >= 2:
                    raise InputError(
                        "worker processes died before finishing any job, twice: a crash on start-up? "
                        "(a script that calls run_sweep must do so under `if __name__ == '__main__':`)"
                    )
                pool.shutdown(wait=False, cancel_futures=True)
                pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_start)
                served = 0
            for fut in sorted(done, key=lambda f: pending[f]):
                i, attempt = pending.pop(fut)
                exc = fut.exception()
                if exc is None:
                    out = fut.result()
                elif isinstance(exc, BrokenProcessPool):
                    out = Outcome(
                        ok=False, error="a worker process died (killed, out of memory or crashed) during this job"
                    )
                else:
                    out = Outcome(ok=False, error=error_text(exc, where=False))
                if not out.ok and attempt <= retries:
                    submit(i, attempt + 1)
                else:
                    yield i, out, attempt
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _fan_out_dask(
    func: Callable[[Any], Any], items: Sequence[Any], client: Any, retries: int
) -> Generator[tuple[int, Outcome, int], None, None]:
    import distributed

    as_completed: Any = distributed.as_completed

    # Keys name the attempt, so a retry is a new task and not Dask's cached result.
    token = hashlib.sha256(f"{worker_name()}:{time.time_ns()}".encode()).hexdigest()[:12]
    meta: dict[str, tuple[int, int]] = {}

    def submit(i: int, attempt: int) -> Any:
        key = f"perpsim-{token}-{i}-{attempt}"
        meta[key] = (i, attempt)
        return client.submit(_guarded, func, items[i], key=key, pure=False, retries=0)

    live: dict[str, Any] = {}
    for i in range(len(items)):
        f = submit(i, 1)
        live[f.key] = f
    ac = as_completed(list(live.values()), loop=client.loop)
    try:
        for fut in ac:
            live.pop(fut.key, None)
            i, attempt = meta.pop(fut.key)
            try:
                out = fut.result()
            except Exception as exc:  # KilledWorker, CancelledError, a lost connection
                out = Outcome(ok=False, error=error_text(exc, where=False))
            fut.release()
            if not out.ok and attempt <= retries:
                f = submit(i, attempt + 1)
                live[f.key] = f
                ac.add(f)
            else:
                yield i, out, attempt
    finally:
        # Stopped early (Ctrl-C, an error): do not leave our tasks running on a shared cluster.
        if live:
            client.cancel(list(live.values()))


class ProgressBar:
    """A rich progress bar on stderr counting finished calls and failures, or nothing when disabled.

    With ``work`` (units of work in all the calls, e.g. rows to replay) the bar measures
    :meth:`work` reported as it is done, and shows finished calls beside it: calls that
    run long finish in steps too coarse to time.
    """

    def __init__(self, enabled: bool, total: int, label: str, *, work: int = 0) -> None:
        self.bar: Any = None
        self.done = 0
        self.by_work = work > 0
        if not enabled or total == 0:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        counted: list[Any] = [TaskProgressColumn(), f"{{task.fields[done]}}/{total} done"]
        if not self.by_work:
            counted = [MofNCompleteColumn()]
        self.bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            *counted,
            "{task.fields[failed]} failed",
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.bar.add_task(label, total=work if self.by_work else total, failed=0, done=0)
        self.bar.start()

    def advance(self, failed: int) -> None:
        """One more call finished (``failed``: how many have failed so far)."""
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task, advance=0 if self.by_work else 1, failed=failed, done=self.done)

    def work(self, units: int) -> None:
        """``units`` more work done (a bar made with ``work``; thread-safe)."""
        if self.bar is not None and self.by_work:
            self.bar.update(self.task, advance=units)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
