"""reasoning_rl.memory: with glibc keeping freed memory, a large tensor made where a larger one was freed is not paged
in anew; above the trim limit, the kept free memory goes back to the OS.

Each case runs in a fresh interpreter: the setting is process-wide and cannot be undone cleanly.
"""

import subprocess
import sys

import pytest

MB = 2**20
PAGES = 48 * MB // 4096  # the second tensor, 48 MB: above glibc's largest mmap threshold (32 MB)
REUSE = """
import resource, sys, torch
from reasoning_rl import memory
if sys.argv[1] == "retain":
    assert memory.retain_freed_memory()
x = torch.ones(16 * 2**20)  # 64 MB of fp32
del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
y = torch.ones(12 * 2**20)  # 48 MB: a same-sized one would not fit the freed chunk (alignment padding)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
TRIM = """
import sys, torch
from reasoning_rl import memory
assert memory.retain_freed_memory()
x = torch.ones(64 * 2**20)  # 256 MB of fp32, touched: resident
del x  # kept by glibc, still resident
before = memory.resident_bytes()
limit = before - 64 * 2**20 if sys.argv[1] == "over" else before + 2**30
print(memory.trim_freed_memory_above(limit), before, memory.resident_bytes())
"""

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc knobs: Linux only")


def run(script: str, case: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", script, case], capture_output=True, text=True,
                          check=True).stdout.split()


def page_faults_of_second_tensor(mode: str) -> int:
    return int(run(REUSE, mode)[-1])


def trim(case: str) -> tuple[str, int, int]:
    trimmed, before, after = run(TRIM, case)[-3:]
    return trimmed, int(before), int(after)


@glibc_only
def test_a_freed_large_tensor_is_reused_without_page_faults():
    assert page_faults_of_second_tensor("retain") < PAGES // 20


@glibc_only
def test_by_default_glibc_pages_a_large_tensor_in_anew():  # the control: what the setting removes
    assert page_faults_of_second_tensor("default") > PAGES // 2


@glibc_only
def test_trim_over_the_limit_hands_kept_free_memory_back():
    trimmed, before, after = trim("over")
    assert trimmed == "True" and before - after > 200 * MB


@glibc_only
def test_trim_under_the_limit_keeps_free_memory():  # the control: nothing is trimmed below the limit
    trimmed, before, after = trim("under")
    assert trimmed == "False" and abs(before - after) < 16 * MB
