"""reasoning_rl.train.trim: above its limit, free memory that glibc kept (reasoning_rl/memory.py) goes back to the OS.

Each case runs in a fresh interpreter: keeping freed memory is process-wide and cannot be undone cleanly.
"""

import subprocess
import sys

import pytest

MB = 2**20
SCRIPT = """
import sys, torch
from reasoning_rl import memory
from reasoning_rl.train import trim
assert memory.retain_freed_memory()
x = torch.ones(64 * 2**20)  # 256 MB of fp32, touched: resident
del x  # kept by glibc, still resident
before = trim.resident_bytes()
limit = before - 64 * 2**20 if sys.argv[1] == "over" else before + 2**30
print(trim.trim_freed_memory_above(limit), before, trim.resident_bytes())
"""

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim: Linux only")


def run(case: str) -> tuple[str, int, int]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, case], capture_output=True, text=True, check=True)
    trimmed, before, after = done.stdout.split()[-3:]
    return trimmed, int(before), int(after)


@glibc_only
def test_over_the_limit_kept_free_memory_is_handed_back():
    trimmed, before, after = run("over")
    assert trimmed == "True" and before - after > 200 * MB


@glibc_only
def test_under_the_limit_kept_free_memory_stays():  # the control: nothing is trimmed below the limit
    trimmed, before, after = run("under")
    assert trimmed == "False" and abs(before - after) < 16 * MB
