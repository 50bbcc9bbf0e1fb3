"""Running one attempt of a job as a subprocess: its process group, timeout and output.

The only module that starts processes (DESIGN section 4); docs/running.md tells the whole
story. ``subprocess.Popen`` in a new session (not asyncio's subprocess machinery, whose
child watcher costs a thread per child on 3.11); stdout and stderr on our own pipes, read
with ``loop.add_reader`` into bounded head + tail buffers; the exit learned from a pidfd
(or, without one, a thread blocked in ``waitpid``), and ``Popen`` reaps, so nothing else
in the daemon may call ``waitpid(-1)``. Every delay is the loop's monotonic time.

A stopped attempt (timeout, ``terminate()``) gets SIGTERM to its group, then SIGKILL after
the grace; its result waits until the group is empty or killed. A normal attempt's
background children are left alone: reading stops ``drain_grace`` after the main exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from cronplus.core.model import Outcome
from cronplus.run import limits
from cronplus.run.capture import Capture
from cronplus.run.command import (
    CONTROL_PREFIXES,
    CONTROL_VARIABLES,
    DEFAULT_DRAIN_GRACE,
    DEFAULT_OUTPUT_LIMIT,
    NO_LIMITS,
    STDERR_TAIL_BYTES,
    STDERR_TAIL_LINES,
    Command,
    ProcessResult,
    command_for,
    is_control_variable,
    job_environment,
    kept_text,
    passed_on,
    tail_text,
)
from cronplus.run.exits import (
    Stop,
    judge,
    lost_output_reason,
    spawn_failure_reason,
    wrapper_failure,
)
from cronplus.run.lines import Lines, LineSink
from cronplus.run.parking import BATCH, LOST, Parking
from cronplus.run.secrets import NO_SECRETS, Redactor

__all__ = [
    "CONTROL_PREFIXES",
    "CONTROL_VARIABLES",
    "DEFAULT_DRAIN_GRACE",
    "DEFAULT_OUTPUT_LIMIT",
    "NO_LIMITS",
    "STDERR_TAIL_BYTES",
    "STDERR_TAIL_LINES",
    "Command",
    "ProcessResult",
    "Runner",
    "RunningProcess",
    "call_in_child",
    "command_for",
    "is_control_variable",
    "job_environment",
    "kept_text",
    "passed_on",
    "spawn_failure_reason",
    "tail_text",
    "watch_exit_pidfd",
    "watch_exit_thread",
]

_READ_SIZE = 64 * 1024  # a Linux pipe holds 64 KiB, so one read empties it
_GROUP_POLL = 0.05  # seconds between "is the stopped group empty yet?" checks
_STATUS_LIMIT = 64  # bytes of the limits wrapper's status: "exec 2" and the like


# --- learning of the exit --------------------------------------------------------------

ExitWatcher = Callable[
    [asyncio.AbstractEventLoop, subprocess.Popen[bytes], Callable[[], None]], None
]
"""Calls ``on_exit`` on the loop once ``popen`` has exited and been reaped."""


def watch_exit_pidfd(
    loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes], on_exit: Callable[[], None]
) -> None:
    """A pidfd becomes readable when the process exits: no thread, no SIGCHLD handler.

    A child that has already exited is reaped and reported at once, with no pidfd.
    """
    if popen.poll() is not None:
        on_exit()
        return
    try:
        pidfd = os.pidfd_open(popen.pid)
    except OSError:
        # A kernel before 5.3 or a seccomp filter that forbids the call.
        watch_exit_thread(loop, popen, on_exit)
        return

    def readable() -> None:
        if popen.poll() is None:
            return
        loop.remove_reader(pidfd)
        os.close(pidfd)
        on_exit()

    loop.add_reader(pidfd, readable)


def watch_exit_thread(
    loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes], on_exit: Callable[[], None]
) -> None:
    """The portable fallback (macOS): one thread per child, blocked in ``waitpid``."""

    def wait() -> None:
        popen.wait()
        # A closed loop means nobody is waiting for this result any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(on_exit)

    threading.Thread(target=wait, name=f"cronplus-wait-{popen.pid}", daemon=True).start()


_watch_exit: ExitWatcher = watch_exit_pidfd if hasattr(os, "pidfd_open") else watch_exit_thread


# --- starting --------------------------------------------------------------------------


def _spawn(command: Command, workdir: str) -> tuple[subprocess.Popen[bytes], tuple[int, ...]]:
    """Start the child on fresh pipes; return it and our (read) ends: stdout, stderr and,
    for a job started through the limits wrapper (``limit_exec.py``), its status."""
    wrapped = limits.needs_wrapper(command.limits, command.account)
    pipes: list[tuple[int, int]] = []
    try:
        for _ in range(3 if wrapped else 2):
            pipes.append(os.pipe())
    except OSError:
        for fd in (fd for pipe in pipes for fd in pipe):
            os.close(fd)
        raise
    reads, writes = [read for read, _ in pipes], [write for _, write in pipes]
    argv = limits.launch(
        command.argv,
        limits=command.limits,
        account=command.account,
        env=command.env,
        euid=os.geteuid(),
        status_fd=writes[2] if wrapped else None,
        group=command.group,
        workdir=workdir,
    )
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=writes[0],
            stderr=writes[1],
            # A job with a user enters its folder after the switch, in the wrapper.
            cwd=workdir if command.account is None else None,
            env=command.env,
            start_new_session=True,
            # Keeps the daemon's own descriptors (the state lock, the notify socket) out of
            # jobs, even one a library opened without O_CLOEXEC.
            close_fds=True,
            pass_fds=writes[2:],
        )
    except BaseException:
        for fd in reads:
            os.close(fd)
        raise
    finally:
        # The child has its copies; ours must go or we would never see end-of-file.
        for fd in writes:
            os.close(fd)
    return popen, tuple(reads)


class RunningProcess:
    """One attempt in flight, made by ``Runner.start``; ``wait()`` gives its result."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        command: Command,
        on_done: Callable[[RunningProcess], None],
    ) -> None:
        self.command = command
        self._hide = NO_SECRETS
        self.pid: int | None = None
        self._loop = loop
        self._on_done = on_done
        self._future: asyncio.Future[ProcessResult] = loop.create_future()
        self._started = loop.time()
        self._popen: subprocess.Popen[bytes] | None = None
        self._stdout = Capture(command.output_limit)
        self._stderr = Capture(command.output_limit)
        self._status = Capture(_STATUS_LIMIT)  # the limits wrapper's word on its exec
        self._open: dict[int, Capture] = {}
        self._lines: dict[Capture, Lines] = {}  # the streams whose lines a sink takes
        self._drain_grace = 0.0
        self._exited_at: float | None = None
        self._stop = Stop.NONE
        self._group_killed = False
        self._lost = False  # a read end not taken back from parking
        self._cut_short = False  # cronplus ended the output: it stopped reading, or the job
        self._kill_at: float | None = None  # set once the group is being stopped
        self._timers: dict[str, asyncio.TimerHandle] = {}

    @property
    def done(self) -> bool:
        return self._future.done()

    async def wait(self) -> ProcessResult:
        # Shielded: a waiter that is cancelled must not cancel the result for the others.
        return await asyncio.shield(self._future)

    def mask_secrets(self, hide: Redactor) -> None:
        """Mask ``hide``'s secrets in the output of the result. The result is made on a
        later loop turn, so calling this right after ``Runner.start`` is in time."""
        self._hide = hide
        for lines in self._lines.values():
            lines.mask_secrets(hide)

    def send_lines(self, sink: LineSink) -> None:
        """Hand ``sink`` each line of stdout and stderr as it comes (``lines.py``), with
        the secrets given to ``mask_secrets`` masked; in time right after ``Runner.start``."""
        self._lines = {
            self._stdout: Lines("stdout", sink, self._hide),
            self._stderr: Lines("stderr", sink, self._hide),
        }

    def terminate(self, grace: float) -> None:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; calling again may only
        bring the SIGKILL closer."""
        if self.done or self._popen is None:
            return
        if self._kill_at is None:
            self._begin_stop(Stop.TERMINATE, grace)
        elif self._loop.time() + grace < self._kill_at:
            self._schedule_kill(grace)

    # --- life cycle (called by Runner.start and by the loop) -------------------------

    def _attach(self, popen: subprocess.Popen[bytes], fds: tuple[int, ...], grace: float) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._drain_grace = grace
        self._open = dict(zip(fds, (self._stdout, self._stderr, self._status), strict=False))

    def _reopen(self, fds: list[int]) -> None:
        """Its read ends are back from parking under new numbers, in the same order."""
        captures = self._open.values()
        self._open = {fd: capture for fd, capture in zip(fds, captures, strict=True) if fd != LOST}
        if len(self._open) < len(fds):
            # Parking leaves room for all (parking.py), unless something else took it
            # meanwhile. A job whose output cannot be read must not run on unseen.
            self._lost = True
            self._signal_group(signal.SIGKILL)

    def _watch(self) -> None:
        assert self._popen is not None
        for fd in self._open:
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, self._on_readable, fd)
        _watch_exit(self._loop, self._popen, self._on_exit)
        if self.command.timeout is not None and self._exited_at is None:
            deadline = self._started + self.command.timeout
            self._timers["timeout"] = self._loop.call_at(deadline, self._on_timeout)

    def _fail(self, reason: str) -> None:
        self._finish(
            ProcessResult(
                outcome=Outcome.FAILED,
                exit_code=None,
                signal=None,
                duration_s=self._loop.time() - self._started,
                pid=None,
                stdout=b"",
                stderr=b"",
                reason=reason,
            )
        )

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO and the like: nothing more will come from this pipe
        if data:
            capture = self._open[fd]
            capture.feed(data)
            if (lines := self._lines.get(capture)) is not None and lines.open:
                lines.feed(data)
            return
        self._close_pipe(fd)
        self._settle()

    def _close_pipe(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        os.close(fd)
        if (lines := self._lines.get(self._open.pop(fd))) is not None:
            lines.close()

    def _on_exit(self) -> None:
        self._exited_at = self._loop.time()
        self._cancel("timeout")
        if self._open:
            # A background child may hold the pipes for hours; give it a moment, then let go.
            self._timers["drain"] = self._loop.call_later(self._drain_grace, self._stop_reading)
        self._settle()

    def _stop_reading(self) -> None:
        self._cut_short = self._cut_short or bool(self._open)
        for fd in list(self._open):
            self._close_pipe(fd)
        self._settle()

    def _on_timeout(self) -> None:
        if self._kill_at is None:  # a terminate() already under way keeps its outcome
            self._begin_stop(Stop.TIMEOUT, self.command.kill_grace)

    def _begin_stop(self, why: Stop, grace: float) -> None:
        # After the main child's exit the group's leftovers are still stopped, but the
        # outcome is the one the main child earned by itself.
        if self._exited_at is None:
            self._stop = why
        self._signal_group(signal.SIGTERM)
        self._schedule_kill(grace)

    def _schedule_kill(self, grace: float) -> None:
        self._cancel("kill")
        self._kill_at = self._loop.time() + grace
        self._timers["kill"] = self._loop.call_later(grace, self._kill_group)

    def _kill_group(self) -> None:
        self._signal_group(signal.SIGKILL)
        self._group_killed = True
        self._settle()

    def _signal_group(self, number: int) -> None:
        assert self.pid is not None
        self._cut_short = True
        # Gone already is fine; EPERM is what macOS answers for a group of zombies.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, number)

    def _group_alive(self) -> bool:
        assert self.pid is not None
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, but is not ours to signal (a setuid grandchild)
        return True

    def _settle(self) -> None:
        """Finish once the main child has exited, the pipes are closed and, for a stopped
        attempt, the group is empty or SIGKILLed."""
        if self.done or self._exited_at is None or self._open:
            return
        if self._kill_at is not None and not self._group_killed and self._group_alive():
            self._cancel("poll")
            self._timers["poll"] = self._loop.call_later(_GROUP_POLL, self._settle)
            return
        result = self._result()
        if result.limit:
            self._signal_group(signal.SIGKILL)  # what is left of a job that hit a limit goes too
        self._finish(result)

    def _result(self) -> ProcessResult:
        assert self._popen is not None and self._exited_at is not None
        code = self._popen.returncode
        outcome, reason = judge(code, self._stop, self.command)
        result = ProcessResult(
            outcome=outcome,
            exit_code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            duration_s=self._exited_at - self._started,
            pid=self.pid,
            # Masked before the tail is cut from it (docs/running.md, "Secrets in what
            # cronplus shows"): after this, every cut goes through `***`, never a secret.
            stdout=self._stdout.value(self._hide, cut_end=self._cut_short),
            stderr=self._stderr.value(self._hide, cut_end=self._cut_short),
            reason=reason,
            stdout_size=self._stdout.total,
            stderr_size=self._stderr.total,
        )
        if self._lost:
            reason = lost_output_reason(self.command.argv[0])
            return replace(result, outcome=Outcome.FAILED, reason=reason)
        return self._contained(result)

    def _contained(self, result: ProcessResult) -> ProcessResult:
        """The result as the limits wrapper and the limits tell it: a program the wrapper
        could not exec is a spawn failure; an attempt that hit a limit is ``killed`` for it."""
        command = self.command
        if not command.limits.any and command.account is None:
            return result
        failed = wrapper_failure(self._status.value(), command)
        if failed is not None:
            return replace(result, outcome=Outcome.FAILED, exit_code=None, reason=failed)
        if self._stop is not Stop.NONE or result.outcome.ok:
            return result
        tail = result.stderr_tail
        hit = limits.verdict(command.limits, signal_number=result.signal, stderr_tail=tail)
        if hit is None:
            return result
        return replace(result, outcome=Outcome.KILLED, limit=hit[0], reason=hit[1])

    def _finish(self, result: ProcessResult) -> None:
        for name in list(self._timers):
            self._cancel(name)
        self._future.set_result(result)
        self._on_done(self)

    def _cancel(self, timer: str) -> None:
        handle = self._timers.pop(timer, None)
        if handle is not None:
            handle.cancel()


class Runner:
    """Starts attempts and knows which of them are still alive."""

    def __init__(self, *, drain_grace: float = DEFAULT_DRAIN_GRACE) -> None:
        if not drain_grace >= 0:
            raise ValueError(f"Runner drain_grace: expected seconds >= 0, got {drain_grace!r}")
        self._drain_grace = drain_grace
        self._alive: dict[RunningProcess, None] = {}  # a set that keeps start order
        # Started this loop turn; the pipe readers, the exit watch and the timeout wait for
        # the next, so a burst spawns first. Of those, some have their read ends parked.
        self._fresh: list[RunningProcess] = []
        self._parked: list[RunningProcess] = []
        self._in_table: list[RunningProcess] = []
        self._parking = Parking()

    def start(self, command: Command) -> RunningProcess:
        """Spawn ``command`` now (needs a running loop); a spawn that fails gives an
        already finished ``FAILED`` process, never an exception."""
        loop = asyncio.get_running_loop()
        process = RunningProcess(loop=loop, command=command, on_done=self._forget)
        workdir = os.fspath(command.workdir)
        try:
            popen, fds = _spawn(command, workdir)
        except OSError as error:
            process._fail(spawn_failure_reason(error, command.argv[0], workdir))
            return process
        except ValueError as error:
            # Popen's word for text no exec can carry: a NUL byte, "=" in a variable name.
            process._fail(f"cannot start {command.argv[0]}: {error}")
            return process
        self._alive[process] = None
        process._attach(popen, fds, self._drain_grace)
        self._hold(loop, process)
        return process

    def running(self) -> list[RunningProcess]:
        """The attempts still alive, oldest first (for shutdown)."""
        return list(self._alive)

    def _forget(self, process: RunningProcess) -> None:
        self._alive.pop(process, None)

    def _hold(self, loop: asyncio.AbstractEventLoop, process: RunningProcess) -> None:
        """Watch ``process`` on the next loop turn; park its read ends if the burst's
        pile has grown (parking.py: every spawn copies the descriptor table)."""
        if not self._fresh:
            loop.call_soon(self._watch_fresh)
        self._fresh.append(process)
        self._in_table.append(process)
        fds = [fd for started in self._in_table for fd in started._open]
        if len(fds) < BATCH:
            return
        if self._parking.park(fds):
            self._parked.extend(self._in_table)
        else:
            # Refused, perhaps for want of room to take everything back later: take it
            # back now, so that the next pipe fails to open, as it would without parking.
            self._unpark()
        self._in_table.clear()

    def _unpark(self) -> None:
        parked, self._parked = self._parked, []
        back = iter(self._parking.take_back())
        for process in parked:
            process._reopen([next(back) for _ in process._open])

    def _watch_fresh(self) -> None:
        fresh, self._fresh, self._in_table = self._fresh, [], []
        self._unpark()
        loop = asyncio.get_running_loop()
        for process in fresh:
            # Each as if in a callback of its own: one that fails leaves the others watched.
            try:
                process._watch()
            except Exception as error:
                loop.call_exception_handler(
                    {"message": "cannot watch a started job", "exception": error}
                )


# --- one computation in a forked child ---------------------------------------------------

_T = TypeVar("_T")


def call_in_child(compute: Callable[[], _T], *, meanwhile: Callable[[], object] = bool) -> _T:
    """``compute()``, run in a forked copy of this process and pickled back, while this
    process runs ``meanwhile()``.

    For a one-off computation whose short-lived values must never enter this process's
    heap: CPython keeps every 1 MiB arena that such values shared with values that stay,
    so a parse that peaks at 35 MB leaves a daemon 25 MB bigger for good. ``compute``
    runs here instead when forking is not safe (other threads run) or the child fails,
    so its exceptions (and their tracebacks) are this process's own.
    """
    if threading.active_count() > 1 or not hasattr(os, "fork"):
        meanwhile()
        return compute()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        code = 1
        try:
            with open(write, "wb") as pipe:
                pickle.dump(compute(), pipe, protocol=pickle.HIGHEST_PROTOCOL)
            code = 0
        finally:
            os._exit(code)  # nothing of the parent's (atexit, buffers) runs twice
    os.close(write)
    with open(read, "rb") as pipe:
        meanwhile()
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not data:
        return compute()
    result: _T = pickle.loads(data)
    return result
