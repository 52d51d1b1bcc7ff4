"""The session layer's job runner and throttled publisher (used by the explorer widget).

One worker computes; the kernel's main thread only validates and enqueues.

* :class:`JobRunner` — one job at a time on an executor (by default one daemon worker thread).
  The **latest request wins**: submitting a job bumps a generation counter, marks the running
  and any queued job as superseded (their ``should_stop()`` turns true, so the engine stops
  within one probe batch) and the publisher drops everything they publish afterwards.  Every
  job ends in ``done``, ``cancelled`` or ``error`` with a readable message: a
  :class:`~hessexplore.errors.HessExploreError` message verbatim, anything unexpected
  summarised in one line (the traceback is kept in :attr:`JobRunner.last_traceback`, never
  printed: output from a worker thread lands in whichever cell happens to run).
  A job may queue a follow-up (:meth:`JobContext.then`, e.g. the local spectrum after a diagonal
  block): it becomes a job of its own only if the first ends ``done`` and is still the latest
  request, so cancelling or superseding the first also drops the follow-up.
* :class:`Publisher` — one lock, at most ``max_rate`` writes per second, coalescing (only the
  latest pending value of each trait is written).  Three writes of a job skip the wait so the
  page reacts at once: its start (running status), its first result, and its final state
  (always written).  Between them, streaming updates are throttled.
  Writes of one generation never interleave with another's: the generation check and the
  write happen under the same lock, and a new generation discards the old one's pending
  values.
* Executors: anything with ``submit(fn)``.  :class:`ThreadExecutor` (default) runs on one
  daemon thread; :class:`SyncExecutor` runs jobs in the caller's thread (tests, scripts).

Nothing is lost or wedged: *any* exception inside a job — ``SystemExit`` and
``KeyboardInterrupt`` included — ends that job with a status (``cancelled`` for an interrupt,
``error`` otherwise) and leaves the runner usable.  In the caller's thread (``SyncExecutor``,
Ctrl+C in a script) the interrupt is re-raised after the status is written, so the script still
stops.  Workers are stopped when the interpreter exits (running jobs are cancelled and joined, so
no torch work is torn down mid-operation: no ``terminate called without an active exception``)
and when their runner is garbage-collected (:func:`weakref.finalize`).  Submitting to a closed
runner returns a job that already ended ``cancelled``; it never raises from a racing thread.
"""
from __future__ import annotations

import atexit
import collections
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import HessExploreError, JobCancelled

CLOSED_MESSAGE = "this explorer is closed: create a new one (hx.explore(...)) to compute more"
#: seconds the interpreter waits at exit for running jobs to notice their cancellation
EXIT_TIMEOUT = 30.0

STATES = ("idle", "running", "done", "cancelled", "error")
FINAL_STATES = ("done", "cancelled", "error")


def summarize_exception(exc: BaseException, limit: int = 300) -> str:
    """One readable line for an error: HessExploreError messages verbatim, others ``Type: first line``."""
    if isinstance(exc, HessExploreError):
        return str(exc)
    text = str(exc).strip().splitlines()
    first = text[0].strip() if text else ""
    line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    if len(line) > limit:
        line = line[:limit - 1] + "…"
    return f"internal error ({line})"


# ---- executors -------------------------------------------------------------------------------
class SyncExecutor:
    """Runs submitted callables at once in the calling thread (re-entrant submits are queued
    and run after the current one returns, so a job submitted from inside a job runs next)."""

    def __init__(self):
        self._queue: collections.deque = collections.deque()
        self._running = False

    def submit(self, fn: Callable[[], Any]) -> bool:
        self._queue.append(fn)
        if self._running:
            return True
        self._running = True
        try:
            while self._queue:
                self._queue.popleft()()
        except BaseException:
            self._queue.clear()      # an interrupt (Ctrl+C) stops what was queued behind it too
            raise
        finally:
            self._running = False
        return True

    def shutdown(self, wait: bool = True) -> None:  # noqa: ARG002 - executor protocol
        self._queue.clear()


class ThreadExecutor:
    """One daemon worker thread, started on first use (a job still running at interpreter exit
    does not keep the process alive).  An idle worker ends after ``idle_timeout`` seconds (an
    explorer left open holds no thread); the next submit starts a fresh one."""

    def __init__(self, name: str = "hessexplore-worker", idle_timeout: float | None = 60.0):
        self._name = name
        self.idle_timeout = idle_timeout
        self._queue: collections.deque = collections.deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, fn: Callable[[], Any]) -> bool:
        """Queue ``fn`` for the worker; False (nothing queued) once the executor is shut down."""
        with self._cv:
            if self._closed:
                return False
            self._queue.append(fn)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cv.notify()
        return True

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    if not self._cv.wait(self.idle_timeout) and not self._queue and not self._closed:
                        if self._thread is threading.current_thread():
                            self._thread = None      # idle too long: end; submit() starts a new worker
                        return
                if self._closed and not self._queue:
                    return
                fn = self._queue.popleft()
            try:
                fn()
            except BaseException:  # noqa: BLE001 - the runner reports job errors itself; keep the loop alive
                pass
            finally:
                fn = None   # an idle worker must not keep the last job's runner (and its widget) alive

    @property
    def thread(self) -> threading.Thread | None:
        """The current worker thread (None before the first job and after an idle exit)."""
        return self._thread

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> None:
        with self._cv:
            self._closed = True
            self._queue.clear()
            self._cv.notify_all()
            t = self._thread
        if wait and t is not None and t is not threading.current_thread():
            t.join(timeout)


# ---- publisher -------------------------------------------------------------------------------
class Publisher:
    """Throttled, coalescing, generation-checked writer of widget traits.

    ``write(updates: dict)`` does the actual writing (the widget sets its traits inside
    ``hold_sync()``); it is always called with the lock held, from whichever thread flushes
    (the worker, a deferred-flush timer, or the main thread).
    """

    def __init__(self, write: Callable[[dict], None], max_rate: float = 20.0, *,
                 clock: Callable[[], float] = time.monotonic):
        self._write = write
        self.interval = 1.0 / max_rate if max_rate and max_rate > 0 else 0.0
        self._clock = clock
        self._lock = threading.RLock()
        self._job = 0
        self._pending: dict[str, Any] = {}
        self._last = -float("inf")
        self._timer: threading.Timer | None = None
        self._closed = False
        self.writes = 0      # number of write() calls (flushes)
        self.dropped = 0     # updates refused because their job was superseded
        self.write_errors = 0
        self.last_write_error: str | None = None

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    @property
    def job(self) -> int:
        return self._job

    def begin(self, job: int) -> bool:
        """Start generation ``job``: older jobs' pending values are discarded, their updates
        refused.  Generations only move forward (an older ``job`` is ignored: False)."""
        with self._lock:
            if job < self._job:
                return False
            if job > self._job:
                self._job = job
                self._pending.clear()
            return True

    def update(self, job: int, *, final: bool = False, now: bool = False, **traits: Any) -> bool:
        """Queue trait values for ``job``; returns False (and writes nothing) if the job is stale.

        The write happens at once if the last one is at least ``interval`` old (or ``final`` /
        ``now``: a job's final state, its start and first result), otherwise a deferred flush
        is scheduled; values of the same trait coalesce.
        """
        with self._lock:
            if job != self._job or self._closed:
                self.dropped += 1
                return False
            self._pending.update(traits)
            t = self._clock()
            if final or now or t - self._last >= self.interval:
                self._flush_locked(t)
            else:
                self._schedule_locked(self.interval - (t - self._last))
            return True

    def flush(self) -> None:
        """Write whatever is pending now (ignores the rate limit)."""
        with self._lock:
            self._flush_locked(self._clock())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._pending.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    # -- internals --
    def _schedule_locked(self, delay: float) -> None:
        if self._timer is not None:
            return
        t = threading.Timer(max(delay, 0.0), self._on_timer)
        t.daemon = True
        t.name = "hessexplore-publisher"
        self._timer = t
        t.start()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            if not self._pending or self._closed:
                return
            now = self._clock()
            wait = self.interval - (now - self._last)
            if wait > 1e-4:   # timers may fire a little early: keep the rate bound exact
                self._schedule_locked(wait)
                return
            self._flush_locked(now)

    def _flush_locked(self, now: float) -> None:
        if not self._pending:
            return
        updates, self._pending = self._pending, {}
        self._last = now
        self.writes += 1
        try:
            self._write(updates)
        except Exception as exc:  # noqa: BLE001 - a failing write must not kill the worker
            self.write_errors += 1
            self.last_write_error = summarize_exception(exc)


# ---- jobs ------------------------------------------------------------------------------------
@dataclass
class Job:
    """One unit of work; ``fn(ctx)`` returns the message shown when it is done."""

    id: int
    kind: str
    label: str
    fn: Callable[["JobContext"], str | None]
    stop: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    stop_reason: str | None = None       # "user" | "superseded" | "shutdown"
    state: str = "queued"
    message: str = ""
    started: float | None = None
    ended: float | None = None
    follow: tuple | None = None          # (kind, fn, label, initial): queued when this job ends done
    cancel_times: dict = field(default_factory=dict)   # wall clock of a user cancel: sent (page), received

    def cancel(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop.set()


class JobContext:
    """What a running job sees: ``should_stop`` for the engine, ``publish`` for results."""

    def __init__(self, job: Job, runner: "JobRunner"):
        self.job = job
        self._runner = runner
        self.summary = ""        # progress so far in words, used in the "cancelled" message
        self.progress_value = 0.0
        self._first_result = True

    @property
    def id(self) -> int:
        return self.job.id

    def should_stop(self) -> bool:
        return self.job.stop.is_set()

    def check(self) -> None:
        """Raise :class:`JobCancelled` if the job was cancelled or superseded."""
        if self.job.stop.is_set():
            raise JobCancelled()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.job.started if self.job.started is not None else 0.0

    def then(self, kind: str, fn: Callable[["JobContext"], str | None], label: str = "",
             initial: Callable[[int], dict] | None = None) -> None:
        """Queue ``fn`` as a follow-up job once this one ends ``done`` — only if it is still the
        latest request then (nothing newer was submitted, it was not cancelled).  The follow-up
        is a job of its own: a new generation with its own status, cancellable like any other."""
        self.job.follow = (kind, fn, label, initial)

    def status(self, state: str = "running", message: str | None = None, progress: float | None = None) -> dict:
        if progress is not None:
            self.progress_value = float(min(max(progress, 0.0), 1.0))
        return {"state": state, "message": self.job.label if message is None else message, "job": self.job.id,
                "kind": self.job.kind, "progress": self.progress_value, "elapsed": round(self.elapsed, 4)}

    def publish(self, *, progress: float | None = None, message: str | None = None, final: bool = False,
                **traits: Any) -> bool:
        """Publish trait values (and a running status) for this job; False if it is stale.

        The first call that carries results (any trait besides the status) is written at once.
        """
        first, self._first_result = self._first_result and bool(traits), self._first_result and not traits
        return self._runner.publisher.update(self.job.id, final=final, now=first,
                                             status=self.status("running", message, progress), **traits)


class JobRunner:
    """Latest-request-wins job queue over an executor, reporting through a :class:`Publisher`.

    ``status_trait`` is the trait the runner writes job status dicts to
    (``{state, message, job, kind, progress, elapsed}``).
    """

    def __init__(self, publisher: Publisher, executor=None, *, status_trait: str = "status"):
        self.publisher = publisher
        self.executor = executor if executor is not None else ThreadExecutor()
        self.status_trait = status_trait
        self._lock = threading.Lock()
        self._gen = 0
        self._pending: Job | None = None
        self._current: Job | None = None
        self._draining = False
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self.last_job: Job | None = None
        self.last_traceback: str | None = None
        _LIVE.add(self)
        # stop the worker when the runner (e.g. an explorer never closed) is garbage-collected
        self._finalizer = weakref.finalize(self, _shutdown_executor, self.executor, False, None)
        self._finalizer.atexit = False      # interpreter exit: _stop_all_at_exit cancels and joins instead

    @property
    def generation(self) -> int:
        return self._gen

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def _next_generation_locked(self) -> int:
        # Called with the runner lock held; the caller then calls publisher.begin() *outside* it:
        # the publisher's lock is held while traits are written, and trait observers may submit
        # jobs, so the runner lock must never wait for the publisher lock.
        self._gen += 1
        for j in (self._pending, self._current):
            if j is not None:
                j.cancel("superseded")
        if self._pending is not None:
            self._pending.state, self._pending.message = "cancelled", "superseded before it started"
            self._pending.finished.set()
            self._pending = None
        return self._gen

    def submit(self, kind: str, fn: Callable[[JobContext], str | None], label: str = "",
               initial: Callable[[int], dict] | None = None, **traits: Any) -> Job:
        """Queue ``fn`` as the new job (superseding any other); publish its running status,
        ``traits`` (e.g. the selection) and ``initial(job_id)`` (more traits) before it starts.

        On a closed runner nothing runs: the returned job has already ended ``cancelled``."""
        with self._lock:
            if self._closed:
                return self._closed_job(kind, label)
            job = Job(self._next_generation_locked(), kind, label or kind, fn)
            self._pending = job
            self._idle.clear()
            self.last_job = job
        if initial is not None:
            traits.update(initial(job.id))
        self._announce(job, traits)
        if self.executor.submit(self._drain) is False:     # shut down between the check and now
            with self._lock:
                if self._pending is job:
                    self._pending = None
                    if self._current is None and not self._draining:
                        self._idle.set()
            job.cancel("shutdown")
            job.state, job.message = "cancelled", CLOSED_MESSAGE
            job.finished.set()
        return job

    def _closed_job(self, kind: str, label: str) -> Job:
        job = Job(self._gen, kind, label or kind, lambda ctx: None, stop_reason="shutdown", state="cancelled",
                  message=CLOSED_MESSAGE)
        job.stop.set()
        job.finished.set()
        return job

    def reject(self, kind: str, message: str, **traits: Any) -> int:
        """A request that never becomes a job (bad input): it still wins over the running job
        (the user's latest intent), and the status shows ``error`` with ``message``."""
        with self._lock:
            gen = self._next_generation_locked()
        self.publisher.begin(gen)
        status = {"state": "error", "message": message, "job": gen, "kind": kind, "progress": 0.0, "elapsed": 0.0}
        self.publisher.update(gen, final=True, **{self.status_trait: status}, **traits)
        return gen

    def cancel(self, sent_at: float | None = None) -> Job | None:
        """Cancel the running (or queued) job; it ends ``cancelled``.  None if nothing runs.

        ``sent_at``: wall-clock seconds when the page sent the cancel; the final status then
        carries ``latency = {message_s, worker_s}`` (page → kernel handler, handler → worker
        stopped) — where a slow cancel spends its time."""
        received = time.time()
        with self._lock:
            for job in (self._pending, self._current):      # the newest first; skip ones already stopping
                if job is not None and not job.stop.is_set() and not job.finished.is_set():
                    job.cancel_times = {"sent": sent_at, "received": received}
                    job.cancel("user")
                    return job
            return None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no job is queued or running; True if idle (False on timeout)."""
        ok = self._idle.wait(timeout)
        if ok:
            self.publisher.flush()
        return ok

    def shutdown(self, wait: bool = False, timeout: float | None = 5.0) -> None:
        """Cancel the running and queued jobs and stop the worker; ``wait``: up to ``timeout`` s
        for the running job to notice (it stops within one batched product) and the worker to end."""
        with self._lock:
            self._closed = True
            for j in (self._pending, self._current):
                if j is not None:
                    j.cancel("shutdown")
            pending, self._pending = self._pending, None
            if pending is not None:
                pending.state, pending.message = "cancelled", CLOSED_MESSAGE
                pending.finished.set()
            if self._current is None and not self._draining:
                self._idle.set()
        t0 = time.monotonic()
        if wait:
            self._idle.wait(timeout)
        _shutdown_executor(self.executor, wait,
                           None if timeout is None else max(0.0, timeout - (time.monotonic() - t0)))

    # -- worker side --
    def _drain(self) -> None:
        with self._lock:
            if self._draining:     # another worker is looping and will pick the job up
                return
            self._draining = True
        while True:
            with self._lock:
                job, self._pending = self._pending, None
                if job is None:
                    self._current = None
                    self._draining = False
                    self._idle.set()
                    return
                self._current = job
            try:
                self._run(job)
            except BaseException:
                # an interrupt (KeyboardInterrupt, SystemExit) re-raised by _run after the job got its
                # status: what was queued behind it is dropped, and the runner stays usable
                with self._lock:
                    dropped, self._pending = self._pending, None
                    self._current = None
                    self._draining = False
                    self._idle.set()
                if dropped is not None:
                    dropped.cancel("interrupted")
                    dropped.state, dropped.message = "cancelled", "interrupted before it started"
                    dropped.finished.set()
                raise
            finally:
                with self._lock:
                    self._current = None

    def _run(self, job: Job) -> None:
        self.publisher.begin(job.id)    # idempotent; makes sure the job's generation is current before it runs
        ctx = JobContext(job, self)
        interrupt: BaseException | None = None
        job.started = time.perf_counter()
        job.state = "running"
        try:
            if job.stop.is_set():
                raise JobCancelled()
            message = job.fn(ctx)
            state = "done"
            message = message or f"{job.label}: done"
            ctx.progress_value = 1.0
        except JobCancelled:
            state = "cancelled"
            message = "Cancelled" + (f" after {ctx.summary}" if ctx.summary else "")
            if job.cancel_times:
                job.cancel_times["stopped"] = time.time()
        except HessExploreError as exc:
            state, message = "error", str(exc)
        except Exception as exc:  # noqa: BLE001 - reported in the page, kept for inspection
            state, message = "error", summarize_exception(exc)
            self.last_traceback = traceback.format_exc()
        except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt: end the job, re-raise below
            interrupt = exc
            self.last_traceback = traceback.format_exc()
            if isinstance(exc, KeyboardInterrupt):
                state, message = "cancelled", "Interrupted (KeyboardInterrupt)" + (
                    f" after {ctx.summary}" if ctx.summary else "")
            else:
                state, message = "error", f"the job stopped with {type(exc).__name__}" + (
                    f" ({_one_line(exc)})" if str(exc) else "")
        job.state, job.message = state, message
        job.ended = time.perf_counter()
        # dropped by the publisher when the job was superseded (a newer generation owns the status)
        final = ctx.status(state, message)
        t = job.cancel_times
        if state == "cancelled" and t.get("stopped") is not None:
            final["latency"] = {"message_s": None if t.get("sent") is None else round(t["received"] - t["sent"], 4),
                                "worker_s": round(t["stopped"] - t["received"], 4)}
        self.publisher.update(job.id, final=True, **{self.status_trait: final})
        job.finished.set()
        if interrupt is not None:
            raise interrupt
        if state == "done" and job.follow is not None:
            self._chain(job)

    def _announce(self, job: Job, traits: dict) -> None:
        """Publish a queued job's running status (and ``traits``) at once, opening its generation."""
        self.publisher.begin(job.id)
        status = {"state": "running", "message": job.label, "job": job.id, "kind": job.kind,
                  "progress": 0.0, "elapsed": 0.0}
        self.publisher.update(job.id, now=True, **{self.status_trait: status}, **traits)

    def _chain(self, job: Job) -> Job | None:
        """Queue ``job``'s follow-up (see :meth:`JobContext.then`) unless a newer request or a
        cancel came first; the draining worker runs it next."""
        kind, fn, label, initial = job.follow
        with self._lock:
            if self._closed or self._gen != job.id or job.stop.is_set() or self._pending is not None:
                return None
            nxt = Job(self._next_generation_locked(), kind, label or kind, fn)
            self._pending = nxt
            self._idle.clear()
            self.last_job = nxt
        self._announce(nxt, initial(nxt.id) if initial is not None else {})
        return nxt


# ---- shutdown at exit / garbage collection ------------------------------------------------------
_LIVE: "weakref.WeakSet[JobRunner]" = weakref.WeakSet()


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _shutdown_executor(executor, wait: bool, timeout: float | None) -> None:
    """Stop an executor (anything with ``shutdown``), joining its worker for ``timeout`` s if ``wait``."""
    shut = getattr(executor, "shutdown", None)
    if shut is None:
        return
    try:
        shut(wait=wait, timeout=timeout)
    except TypeError:           # an executor whose shutdown takes fewer arguments
        try:
            shut(wait=wait)
        except TypeError:
            shut()


def _stop_all_at_exit() -> None:
    """atexit: cancel every live runner's jobs and join its worker, so no job's torch work is
    torn down mid-operation by interpreter finalisation (the C++ runtime would abort: exit 134)."""
    runners = list(_LIVE)
    for r in runners:
        try:
            r.shutdown(wait=False)
        except Exception:  # noqa: BLE001, S110 - best effort at exit
            pass
    deadline = time.monotonic() + EXIT_TIMEOUT
    for r in runners:
        try:
            r.shutdown(wait=True, timeout=max(0.0, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001, S110 - best effort at exit
            pass


atexit.register(_stop_all_at_exit)
