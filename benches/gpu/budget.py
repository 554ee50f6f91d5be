"""Running subprocesses within a time budget that cannot be overrun.

A GPU window is short and ends hard: whatever a run has not written by then is lost. So every step
here runs as a subprocess in its own process group, with its output going straight to a log file
(no pipe a straggler could hold open), and a timeout computed from what is left of the budget:

    budget.timeout_for(cap) = min(cap, time left until the final reserve - STOP_OVERHEAD_S)

so that a step killed at its timeout has been stopped (SIGTERM, then SIGKILL to the whole group)
before the reserve begins, and the reserve stays free for writing the summary and the archive.
Stdlib only: this runs where nothing can be installed.
"""
import os
import signal
import subprocess
import sys
import threading
import time

# SIGTERM first, so a script can still flush; SIGKILL to the group after this long.
KILL_GRACE_S = 2.0
# After SIGKILL, how long to wait for the group leader to be reaped. A process stuck in the GPU
# driver can take longer to die; it is then left behind rather than waited for.
REAP_WAIT_S = 3.0
# The most a timed-out step can cost beyond its timeout.
STOP_OVERHEAD_S = KILL_GRACE_S + REAP_WAIT_S
# How often the echo thread looks for new lines in a step's log.
ECHO_POLL_S = 0.2
# When set, the process group id of the step that is running is kept in this file (removed when it
# ends), so a wrapper that had to kill the runner itself can still stop the step it left behind.
STEP_PIDFILE_ENV = "TESSERA_STEP_PIDFILE"


class OutOfTime(Exception):
    """Raised (by a signal handler) when the run must stop and write what it has."""


class Budget:
    """Seconds for a whole run: `total_s` in all, the last `reserve_s` of them kept for finishing."""

    def __init__(self, total_s, reserve_s, clock=time.monotonic):
        self.total_s = float(total_s)
        self.reserve_s = float(reserve_s)
        self.clock = clock
        self.started = clock()

    def elapsed(self):
        return self.clock() - self.started

    def left(self):
        """Seconds until the hard end of the budget."""
        return self.total_s - self.elapsed()

    def left_for_steps(self):
        """Seconds until every step must have ended (the reserve begins)."""
        return self.left() - self.reserve_s

    def timeout_for(self, cap_s, until_s=None):
        """A step's timeout: at most `cap_s`, and short enough that a step stopped at it (plus the
        stop overhead) ends before the reserve and before `until_s` seconds from now, if given."""
        room = self.left_for_steps()
        if until_s is not None:
            room = min(room, until_s)
        return min(cap_s, room - STOP_OVERHEAD_S)


def stop_group(proc):
    """SIGTERM to the process group of `proc` (it and everything it started), SIGKILL after
    KILL_GRACE_S; waits at most REAP_WAIT_S more. Never raises, never blocks longer."""
    for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, REAP_WAIT_S)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def kill_stragglers(proc):
    """SIGKILL to what is left of a finished step's process group (a child that outlived its
    parent, e.g. a hung `tessera` under a script that exited)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _echo(path, prefix, done):
    """Prints the lines appended to `path` with `prefix` until `done` is set and the end is reached."""
    try:
        with open(path, errors="replace") as f:
            while True:
                line = f.readline()
                if line:
                    print(f"{prefix}{line}", end="" if line.endswith("\n") else "\n", flush=True)
                elif done.is_set():
                    return
                else:
                    time.sleep(ECHO_POLL_S)
    except (OSError, ValueError):
        pass


def run_step(name, cmd, log_path, timeout_s, env=None, cwd=None, echo=True):
    """Runs `cmd` with stdout and stderr into `log_path` (the command line first), at most
    `timeout_s` seconds; returns the record:
      {"name", "cmd", "log", "timeout_s", "elapsed_s", "returncode" (negative: killed by that
       signal; None when it did not start or was stopped), "timed_out", "error" (why it did not
       start) or absent}.
    An exception while waiting (OutOfTime from a signal handler) stops the group and propagates."""
    cmd = [str(c) for c in cmd]
    record = {"name": name, "cmd": cmd, "log": log_path, "timeout_s": round(timeout_s, 1), "elapsed_s": 0.0,
              "returncode": None, "timed_out": False}
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    started = time.monotonic()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    cwd=cwd, start_new_session=True)
        except OSError as e:
            record["error"] = f"could not start: {e}"
            log.write(record["error"] + "\n")
            return record
        pidfile = os.environ.get(STEP_PIDFILE_ENV)
        if pidfile:
            with open(pidfile, "w") as f:
                f.write(f"{proc.pid}\n")
        done = threading.Event()
        if echo:
            threading.Thread(target=_echo, args=(log_path, f"[{name}] ", done), daemon=True).start()
        try:
            record["returncode"] = proc.wait(timeout=max(timeout_s, 0.0))
            kill_stragglers(proc)
        except subprocess.TimeoutExpired:
            record["timed_out"] = True
            stop_group(proc)
            record["returncode"] = proc.returncode
        except BaseException:
            stop_group(proc)
            record["returncode"] = proc.returncode
            record["error"] = "stopped: the run's budget ran out"
            raise
        finally:
            record["elapsed_s"] = round(time.monotonic() - started, 1)
            done.set()
            if pidfile:
                try:
                    os.remove(pidfile)
                except OSError:
                    pass
    if record["timed_out"]:
        with open(log_path, "a") as log:
            log.write(f"\n[stopped after {timeout_s:.0f} s: timeout]\n")
    return record


def describe(record):
    """One line for a step record: ok, exit N, killed by SIGX, timed out, or why it did not start."""
    if record.get("skipped"):
        return f"skipped: {record['skipped']}"
    if record.get("error") and record.get("returncode") is None:
        return record["error"]
    if record.get("timed_out"):
        return f"timed out after {record['timeout_s']:.0f} s"
    rc = record.get("returncode")
    if rc == 0:
        return "ok"
    if rc is not None and rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit {rc}"


def log_tail(path, lines=8, width=300):
    """The last non-empty lines of a log, each cut to `width` characters; [] without one."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    kept = [line.rstrip()[:width] for line in text.splitlines() if line.strip()]
    return kept[-lines:]


def install_deadline(seconds, handler_exc=OutOfTime):
    """SIGALRM after `seconds` and SIGTERM / SIGINT at any time raise `handler_exc` in the main
    thread, so the run can still finish what it has (a safety net: every step already has a
    timeout)."""
    def raise_out_of_time(signum, _frame):
        raise handler_exc(f"signal {signal.Signals(signum).name}")
    for sig in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, raise_out_of_time)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))


def clear_deadline():
    """No more OutOfTime from signals (while finishing)."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    for sig in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit("budget.py is a module of first_contact.py and run_all.py")
