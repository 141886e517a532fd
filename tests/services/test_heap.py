"""Start-up objects leave the collector's reach (services/common/heap.py), in a process of its own:
freezing is process-wide and would otherwise change the test session's collector."""

import subprocess
import sys

from services.settings import REPO_ROOT

SCRIPT = """
import gc, time
from services.common.heap import freeze_startup_heap
loaded = [[i] for i in range(200_000)]          # what a framework leaves behind at start-up
before = len(gc.get_objects())
frozen = freeze_startup_heap("test")
print(before, frozen, len(gc.get_objects()), loaded[123][0])
"""


def test_startup_objects_are_frozen_out_of_collections():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO_ROOT)}, timeout=60, check=True).stdout.split()  # fmt: skip
    before, frozen, tracked_after, kept = map(int, out)
    assert before > 200_000 and frozen >= 200_000  # every surviving start-up object frozen
    assert tracked_after < 1_000  # a full collection no longer walks them
    assert kept == 123  # and they are still alive and usable
