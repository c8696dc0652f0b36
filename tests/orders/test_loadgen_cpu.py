"""bench_api's CPU accounting counts only the processes of the exchange it measures."""

import os
import subprocess
import sys

from orders.loadgen import ProcessCpu

# Burns one CPU second, says so, then waits to be killed (alive when the meter stops).
BUSY = ("import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass\n"
        "print('done', flush=True)\ntime.sleep(30)")


def test_processes_of_another_exchange_on_the_machine_are_not_counted(tmp_path):
    mine, other = tmp_path / "mine", tmp_path / "other"
    mine.mkdir(), other.mkdir()
    cpu = ProcessCpu(str(mine))
    cpu.start()
    child = subprocess.Popen([sys.executable, "-c", BUSY,
                              "run_matcher"], env={**os.environ, "EXCHANGE_DATA_DIR": str(other)},
                             stdout=subprocess.PIPE)
    ours = subprocess.Popen([sys.executable, "-c", BUSY,
                             "run_matcher"], env={**os.environ, "EXCHANGE_DATA_DIR": str(mine)},
                            stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"done\n" and ours.stdout.readline() == b"done\n"
        used = cpu.stop()
    finally:
        child.kill(), ours.kill()
        child.wait(), ours.wait()
    assert 0.9 <= used.get("matcher", 0.0) < 1.9  # ours only, not the other exchange's


# A parent of one kind that runs short-lived children, each burning 0.3 s of CPU and exiting,
# and reaps them: the CPU of children that ended during the run counts (PostgreSQL's backends
# of connections opened and closed during a run are such children of the postmaster).
SPAWNER = (
    "import subprocess, sys\n"
    "burn = 'import time\\nend = time.process_time() + 0.3\\nwhile time.process_time() < end: pass'\n"
    "sys.stdin.readline()\n"
    "for _ in range(3): subprocess.run([sys.executable, '-c', burn])\n"
    "print('done', flush=True)\n"
    "sys.stdin.readline()\n")


def _measured(code: str, data_dir, *, ready: bytes | None = None) -> dict[str, float]:
    """Run ``code`` as a process of kind matcher (it waits for a line on stdin, works, prints
    "done", waits again); the CPU the meter counts between the line and "done". With
    ``ready``, the meter starts only after the process printed that line."""
    process = subprocess.Popen([sys.executable, "-c", code, "run_matcher"],
                               env={**os.environ, "EXCHANGE_DATA_DIR": str(data_dir)},
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        if ready is not None:
            assert process.stdout.readline() == ready
        cpu = ProcessCpu(str(data_dir))
        cpu.start()
        process.stdin.write(b"go\n"), process.stdin.flush()
        assert process.stdout.readline() == b"done\n"
        return cpu.stop()
    finally:
        process.kill(), process.wait()


def test_processes_that_end_during_the_run_count_through_the_parent_that_reaped_them(tmp_path):
    assert 0.85 <= _measured(SPAWNER, tmp_path).get("matcher", 0.0) < 1.6


# A parent whose child burns 1 s before the meter starts and 0.3 s after, then ends and is reaped.
WARM_CHILD = (
    "import subprocess, sys\n"
    "burn = ('import sys, time\\nend = time.process_time() + 1.0\\nwhile time.process_time() < end: pass\\n'\n"
    "        'print(\"warm\", flush=True)\\nsys.stdin.readline()\\n'\n"
    "        'end = time.process_time() + 0.3\\nwhile time.process_time() < end: pass')\n"
    "child = subprocess.Popen([sys.executable, '-c', burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
    "print(child.stdout.readline().decode().strip(), flush=True)\n"
    "sys.stdin.readline()\n"
    "child.stdin.write(b'go\\n'); child.stdin.flush(); child.wait()\n"
    "print('done', flush=True)\n"
    "sys.stdin.readline()\n")


def test_a_process_that_ends_during_the_run_counts_only_what_it_used_after_the_start(tmp_path):
    """Its CPU before the start lands in its parent's counter too when it is reaped: not counted."""
    assert 0.25 <= _measured(WARM_CHILD, tmp_path, ready=b"warm\n").get("matcher", 0.0) < 0.8
