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
