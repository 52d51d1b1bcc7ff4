"""Job runner and publisher (hessexplore.jobs) without torch work: latest request wins,
cancellation, readable errors, throttling, coalescing and generation checks."""
from __future__ import annotations

import threading
import time


from hessexplore.errors import HessExploreError, JobCancelled
from hessexplore.jobs import JobRunner, Publisher, SyncExecutor, ThreadExecutor, summarize_exception


class Recorder:
    """A publisher write target that logs (time, thread, updates)."""

    def __init__(self):
        self.log: list[tuple[float, str, dict]] = []
        self.state: dict = {}
        self.lock = threading.Lock()

    def __call__(self, updates: dict) -> None:
        with self.lock:
            self.log.append((time.monotonic(), threading.current_thread().name, dict(updates)))
        self.state.update(updates)

    def statuses(self):
        return [u["status"] for _, _, u in self.log if "status" in u]


def make(executor=None, max_rate=0.0):
    rec = Recorder()
    pub = Publisher(rec, max_rate=max_rate)
    return rec, pub, JobRunner(pub, executor if executor is not None else SyncExecutor())


# ---- publisher -------------------------------------------------------------------------------
def test_publisher_coalesces_and_throttles():
    rec = Recorder()
    pub = Publisher(rec, max_rate=20.0)
    pub.begin(1)
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 0.6:
        pub.update(1, value=i, other=-i)
        i += 1
        time.sleep(0.001)
    pub.update(1, final=True, value="final")
    dt = time.monotonic() - t0
    times = [t for t, _, _ in rec.log]
    gaps = [b - a for a, b in zip(times[:-2], times[1:-1])]   # the final write is exempt
    assert i > 100 and len(rec.log) <= dt * 20 + 2, (i, len(rec.log))
    assert min(gaps) >= 0.05 - 2e-3, min(gaps)
    assert rec.log[-1][2]["value"] == "final"
    # coalescing: each write carries only the latest values, in order
    vals = [u["value"] for _, _, u in rec.log if isinstance(u.get("value"), int)]
    assert vals == sorted(vals) and len(set(vals)) == len(vals)


def test_publisher_deferred_flush_writes_the_latest_value():
    rec = Recorder()
    pub = Publisher(rec, max_rate=20.0)
    pub.begin(1)
    pub.update(1, x=1)          # written at once
    pub.update(1, x=2)          # within the interval: deferred
    pub.update(1, x=3)          # coalesced with x=2
    assert [u for _, _, u in rec.log] == [{"x": 1}]
    time.sleep(0.2)
    assert [u for _, _, u in rec.log] == [{"x": 1}, {"x": 3}]
    assert rec.log[1][1] == "hessexplore-publisher"


def test_start_and_first_result_are_not_held_back():
    rec, pub, runner = make(max_rate=20.0)

    def fn(ctx):
        ctx.publish(progress=0.1)              # status only: throttled
        ctx.publish(value=1)                   # first result: at once
        ctx.publish(value=2)                   # throttled (coalesced into the final write)
        return "ok"
    runner.submit("estimate", fn)
    ups = [u for _, _, u in rec.log]
    assert ups[0]["status"]["state"] == "running" and "value" not in ups[0]
    assert ups[1]["value"] == 1
    assert ups[2]["value"] == 2 and ups[2]["status"]["state"] == "done"
    assert len(ups) == 3
    assert rec.log[1][0] - rec.log[0][0] < 0.05      # the rate limit did not delay the first result


def test_publisher_drops_stale_generations():
    rec = Recorder()
    pub = Publisher(rec, max_rate=20.0)
    pub.begin(1)
    pub.update(1, x=1)
    pub.update(1, x=2)              # pending
    pub.begin(2)                    # discards job 1's pending value
    assert not pub.update(1, x=99, final=True)
    assert pub.update(2, x=10)
    time.sleep(0.15)
    assert [u["x"] for _, _, u in rec.log] == [1, 10]
    assert pub.dropped == 1
    assert not pub.begin(1) and pub.job == 2          # generations only move forward


def test_publisher_survives_a_failing_write():
    def bad(_):
        raise RuntimeError("nope")
    pub = Publisher(bad, max_rate=0)
    pub.begin(1)
    pub.update(1, x=1)
    assert pub.write_errors == 1 and "RuntimeError: nope" in pub.last_write_error


# ---- runner, synchronous ---------------------------------------------------------------------
def test_job_done_message_and_status_sequence():
    rec, pub, runner = make()

    def fn(ctx):
        for k in range(3):
            ctx.publish(progress=(k + 1) / 3, value=k)
        return "all good"
    job = runner.submit("estimate", fn, "label", selection={"v": "a"})
    assert job.state == "done" and job.message == "all good"
    st = rec.statuses()
    assert st[0]["state"] == "running" and st[0]["message"] == "label" and st[0]["job"] == 1
    assert st[-1] == {**st[-1], "state": "done", "message": "all good", "job": 1, "kind": "estimate", "progress": 1.0}
    assert rec.state["value"] == 2 and rec.state["selection"] == {"v": "a"}
    assert runner.wait(0) and not runner.busy


def test_errors_are_readable_one_liners(capfd):
    rec, pub, runner = make()

    def engine_error(ctx):
        raise HessExploreError("unknown node 'nope'. Valid nodes: 'a', 'b'.")

    def crash(ctx):
        def deep():
            raise RuntimeError("shape mismatch\n  File \"x.py\", line 3\ntraceback text")
        deep()

    runner.submit("block", engine_error)
    assert rec.state["status"]["state"] == "error"
    assert rec.state["status"]["message"] == "unknown node 'nope'. Valid nodes: 'a', 'b'."
    runner.submit("block", crash)
    msg = rec.state["status"]["message"]
    assert rec.state["status"]["state"] == "error"
    assert msg == "internal error (RuntimeError: shape mismatch)" and "\n" not in msg
    assert "Traceback" in runner.last_traceback and "deep" in runner.last_traceback
    out, err = capfd.readouterr()
    assert out == "" and err == ""          # nothing printed


def test_summarize_exception_truncates():
    assert summarize_exception(ValueError("x" * 1000)).endswith("…)")
    assert summarize_exception(KeyError()) == "internal error (KeyError)"
    assert summarize_exception(HessExploreError("verbatim\nmessage")) == "verbatim\nmessage"


def test_cancel_from_inside_stops_at_the_next_check():
    rec, pub, runner = make()
    steps = []

    def fn(ctx):
        for k in range(100):
            ctx.check()
            steps.append(k)
            ctx.summary = f"{k + 1} steps"
            if k == 4:
                runner.cancel()
        return "never"
    job = runner.submit("estimate", fn)
    assert job.state == "cancelled" and steps == list(range(5))
    assert rec.state["status"]["state"] == "cancelled"
    assert rec.state["status"]["message"] == "Cancelled after 5 steps"
    assert runner.cancel() is None          # nothing left to cancel
    # the runner accepts the next job
    assert runner.submit("estimate", lambda ctx: "again").state == "done"
    assert rec.state["status"]["message"] == "again"


def test_superseded_job_publishes_nothing_after_the_new_one_starts():
    rec, pub, runner = make()
    second = {}

    def first(ctx):
        for k in range(100):
            ctx.check()
            ctx.publish(value=("first", k))
            if k == 2 and not second:
                second["job"] = runner.submit("estimate", lambda c: (c.publish(value=("second", 0)), "second done")[1])
        return "first done"
    j1 = runner.submit("estimate", first)
    j2 = second["job"]
    assert j1.state == "cancelled" and j1.stop_reason == "superseded" and j2.state == "done"
    jobs = [u["status"]["job"] for _, _, u in rec.log if "status" in u]
    first_two = jobs.index(j2.id)
    assert all(j == j2.id for j in jobs[first_two:]), jobs
    values = [u["value"][0] for _, _, u in rec.log if "value" in u]
    assert values == ["first"] * 3 + ["second"]
    assert rec.state["status"] == {**rec.state["status"], "state": "done", "message": "second done", "job": j2.id}


def test_reject_supersedes_and_shows_error():
    rec, pub, runner = make()
    gen = runner.reject("estimate", "bad message")
    assert rec.state["status"] == {"state": "error", "message": "bad message", "job": gen, "kind": "estimate",
                                   "progress": 0.0, "elapsed": 0.0}
    assert runner.submit("block", lambda ctx: "ok").id == gen + 1


# ---- runner, real worker thread --------------------------------------------------------------
def test_thread_runner_latest_request_wins_and_cancel():
    rec, pub, runner = make(ThreadExecutor(), max_rate=20.0)
    main = threading.current_thread().name
    threads = set()
    started = threading.Event()

    def slow(tag):
        def fn(ctx):
            threads.add(threading.current_thread().name)
            started.set()
            for k in range(2000):
                ctx.check()
                ctx.publish(value=(tag, k))
                ctx.summary = f"{k} steps"
                time.sleep(0.002)
            return f"{tag} done"
        return fn
    jobs = [runner.submit("estimate", slow(t)) for t in "abcd"]
    assert started.wait(5)
    last = runner.submit("estimate", lambda ctx: "e done")
    assert runner.wait(10)
    assert last.state == "done" and rec.state["status"]["message"] == "e done"
    assert all(j.state == "cancelled" for j in jobs)
    assert main not in threads and threads <= {"hessexplore-worker"}
    # generation order of writes never goes back
    gens = [u["status"]["job"] for _, _, u in rec.log if "status" in u]
    assert gens == sorted(gens)
    # user cancel of a running job ends "cancelled" within one step; the next job runs
    started.clear()
    j = runner.submit("estimate", slow("f"))
    assert started.wait(5)
    time.sleep(0.05)
    t0 = time.monotonic()
    assert runner.cancel() is j
    assert runner.wait(5) and time.monotonic() - t0 < 1.0
    assert j.state == "cancelled" and j.stop_reason == "user"
    assert rec.state["status"]["state"] == "cancelled" and rec.state["status"]["message"].startswith("Cancelled after")
    assert runner.submit("estimate", lambda ctx: "g done") and runner.wait(5)
    assert rec.state["status"]["message"] == "g done"
    runner.shutdown(wait=True)


def test_thread_runner_never_interleaves_two_jobs():
    rec, pub, runner = make(ThreadExecutor(), max_rate=200.0)

    def stream(tag):
        def fn(ctx):
            for k in range(300):
                ctx.check()
                ctx.publish(value=(tag, k))
                time.sleep(0.0005)
            return tag
        return fn
    ids = []
    for k in range(6):
        ids.append(runner.submit("estimate", stream(k)).id)
        time.sleep(0.03)
    assert runner.wait(10)
    seq = [u["value"][0] for _, _, u in rec.log if "value" in u]
    assert seq == sorted(seq), seq            # once job k+1 writes, job k never writes again
    assert rec.state["status"]["job"] == ids[-1] and rec.state["status"]["state"] == "done"
    runner.shutdown(wait=True)


def test_cancel_right_after_a_new_request_cancels_the_new_one():
    rec, pub, runner = make(ThreadExecutor())
    started = threading.Event()

    def slow(ctx):
        started.set()
        while True:
            time.sleep(0.05)     # slow to notice: still "current" when the next request comes
            ctx.check()
    runner.submit("estimate", slow)
    assert started.wait(5)
    new = runner.submit("estimate", lambda ctx: (time.sleep(0.2), "new done")[1])
    assert runner.cancel() is new         # not the superseded job that is still winding down
    assert runner.wait(5)
    assert new.state == "cancelled" and rec.state["status"]["state"] == "cancelled"
    assert rec.state["status"]["job"] == new.id
    runner.shutdown(wait=True)


def test_wait_times_out_while_a_job_runs():
    rec, pub, runner = make(ThreadExecutor())
    gate = threading.Event()

    def fn(ctx):
        while not gate.is_set():
            ctx.check()
            time.sleep(0.005)
        return "released"
    runner.submit("estimate", fn)
    assert not runner.wait(0.1) and runner.busy
    gate.set()
    assert runner.wait(5) and rec.state["status"]["message"] == "released"
    runner.shutdown(wait=True)


def test_observer_submitting_from_the_worker_does_not_deadlock():
    """A trait observer (run under the publisher's lock, on the worker) submits a job while
    another thread is submitting: the runner lock never waits for the publisher lock."""
    box = {}
    rec = Recorder()

    def write(updates):
        rec(updates)
        v = updates.get("value")
        if v is not None and v[1] == 5 and "chained" not in box:   # an observer reacting to a result
            box["chained"] = True
            other = threading.Thread(target=lambda: runner.submit("estimate", lambda ctx: "other done"),
                                     daemon=True)
            other.start()                 # it takes the runner lock, then needs the publisher lock
            time.sleep(0.1)
            runner.submit("estimate", lambda ctx: "chained done")    # needs the runner lock
    pub = Publisher(write, max_rate=0)
    runner = JobRunner(pub, ThreadExecutor())

    def fn(ctx):
        for k in range(50):
            ctx.check()
            ctx.publish(value=("a", k))
        return "a done"
    runner.submit("estimate", fn)
    assert runner.wait(10), "deadlock"
    assert rec.state["status"]["state"] == "done"
    assert rec.state["status"]["message"] in ("other done", "chained done")
    runner.shutdown()


def test_job_cancelled_exception_from_engine_counts_as_cancel():
    rec, pub, runner = make()

    def fn(ctx):
        raise JobCancelled()
    assert runner.submit("map", fn).state == "cancelled"
    assert rec.state["status"]["message"] == "Cancelled"


# ---- nothing wedged: BaseException, closed runners, exit, garbage collection --------------------
import gc            # noqa: E402
import os            # noqa: E402
import subprocess    # noqa: E402
import sys           # noqa: E402
import textwrap      # noqa: E402
import weakref       # noqa: E402

import pytest        # noqa: E402


@pytest.mark.parametrize("exc,state", [(SystemExit(3), "error"), (KeyboardInterrupt(), "cancelled")])
def test_base_exception_in_a_sync_job_ends_it_and_leaves_the_runner_usable(exc, state):
    rec, pub, runner = make()

    def fn(ctx):
        raise exc
    with pytest.raises(type(exc)):          # Ctrl+C in a script still stops the script
        runner.submit("map", fn)
    job = runner.last_job
    assert job.state == state and job.finished.is_set()
    assert rec.state["status"]["state"] == state and type(exc).__name__ in rec.state["status"]["message"]
    assert not runner.busy and runner.wait(1)
    nxt = runner.submit("map", lambda ctx: "after")
    assert nxt.state == "done" and rec.state["status"]["message"] == "after"


@pytest.mark.parametrize("exc,state", [(SystemExit(3), "error"), (KeyboardInterrupt(), "cancelled")])
def test_base_exception_in_a_thread_job_leaves_the_runner_usable(exc, state):
    rec, pub, runner = make(ThreadExecutor())

    def fn(ctx):
        raise exc
    job = runner.submit("map", fn)
    assert runner.wait(5) and job.state == state
    assert rec.state["status"]["state"] == state
    nxt = runner.submit("map", lambda ctx: "after")
    assert runner.wait(5) and nxt.state == "done" and rec.state["status"]["message"] == "after"
    runner.shutdown(wait=True)


def test_submit_to_a_closed_runner_or_executor_never_raises():
    rec, pub, runner = make(ThreadExecutor())
    runner.executor.shutdown()            # the executor closes between the runner's check and its submit
    job = runner.submit("map", lambda ctx: "never")
    assert job.state == "cancelled" and job.finished.is_set() and "closed" in job.message
    assert not runner.busy and runner.wait(1)
    runner.shutdown()
    job = runner.submit("map", lambda ctx: "never")
    assert job.state == "cancelled" and "closed" in job.message


def test_shutdown_cancels_and_joins_a_running_job():
    rec, pub, runner = make(ThreadExecutor())
    started = threading.Event()

    def fn(ctx):
        while True:
            started.set()
            time.sleep(0.01)
            ctx.check()
    job = runner.submit("map", fn)
    assert started.wait(5)
    runner.shutdown(wait=True, timeout=5)
    assert job.state == "cancelled" and job.stop_reason == "shutdown"
    assert not runner.executor.thread.is_alive()


def test_a_garbage_collected_runner_stops_its_worker():
    rec, pub, runner = make(ThreadExecutor())
    assert runner.submit("map", lambda ctx: "x") and runner.wait(5)
    thread = runner.executor.thread
    ref = weakref.ref(runner)
    del runner
    gc.collect()
    assert ref() is None, "an idle worker keeps its runner alive"
    thread.join(5)
    assert not thread.is_alive()


def test_interpreter_exit_during_a_torch_job_is_clean(tmp_path):
    """Exit while the worker is inside torch: no 'terminate called without an active exception'."""
    script = tmp_path / "exit_job.py"
    script.write_text(textwrap.dedent("""
        import threading, torch
        from hessexplore.jobs import JobRunner, Publisher, ThreadExecutor
        started = threading.Event()
        def fn(ctx):
            a = torch.randn(400, 400, dtype=torch.float64)
            while True:
                started.set()
                a = torch.tanh(a @ a / 400)
                ctx.check()
        r = JobRunner(Publisher(lambda u: None, max_rate=0), ThreadExecutor())
        r.submit("block", fn)
        assert started.wait(30)
        print("exiting", flush=True)
    """))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert "exiting" in out.stdout and "terminate called" not in out.stderr and "Traceback" not in out.stderr


def test_an_idle_worker_ends_and_the_next_job_starts_a_new_one():
    ex = ThreadExecutor(idle_timeout=0.1)
    rec, pub, runner = make(ex)
    assert runner.submit("map", lambda ctx: "one") and runner.wait(5)
    first = ex.thread
    first.join(5)
    assert not first.is_alive() and ex.thread is None
    job = runner.submit("map", lambda ctx: "two")
    assert runner.wait(5) and job.state == "done" and rec.state["status"]["message"] == "two"
    assert ex.thread is not None and ex.thread is not first
    runner.shutdown(wait=True)
