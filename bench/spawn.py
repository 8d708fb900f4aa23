"""Start one command and report its own wall time and peak RSS (run with ``python -S -I``).

Usage: ``python -S -I spawn.py TIMEOUT STDOUT STDERR -- ARGV...``; prints one line
``wall_s maxrss_kib user_s sys_s exit timed_out`` on its standard output.

Why a separate small process: on Linux a child's ``ru_maxrss`` starts from the resident size
of the process that forked it (``exec`` records the old address space's high-water mark), so a
command started straight from the benchmark (tens of MiB of generator state) would report at
least that much. This helper imports nothing beyond ``os``, ``sys``, ``time`` and ``signal``
(about 8-10 MiB resident), which bounds the error from below for every command alike; it also
times the command itself, so its own start-up is not counted.
"""

import os
import signal
import sys
import time


def main() -> int:
    """Spawn, wait with ``wait4``, print the measurements."""
    timeout = float(sys.argv[1])
    out, err = sys.argv[2], sys.argv[3]
    if sys.argv[4] != "--":
        print("usage: spawn.py TIMEOUT STDOUT STDERR -- ARGV...", file=sys.stderr)
        return 2
    argv = sys.argv[5:]
    wflags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, out, wflags, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, err, wflags, 0o644),
    ]
    timed_out = []
    t0 = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)

    def on_alarm(signum: int, frame: object) -> None:
        timed_out.append(1)
        os.kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    signal.setitimer(signal.ITIMER_REAL, 0)
    code = os.waitstatus_to_exitcode(status)
    print(wall, ru.ru_maxrss, ru.ru_utime, ru.ru_stime, code, len(timed_out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
