"""reasoning_rl.memory: with glibc keeping freed memory, a large tensor made where a larger one was freed is not paged
in anew.

Each case runs in a fresh interpreter: the setting is process-wide and cannot be undone cleanly.
"""

import subprocess
import sys

import pytest

PAGES = 48 * 2**20 // 4096  # the second tensor, 48 MB: above glibc's largest mmap threshold (32 MB)
SCRIPT = """
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

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc knobs: Linux only")


def page_faults_of_second_tensor(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


@glibc_only
def test_a_freed_large_tensor_is_reused_without_page_faults():
    assert page_faults_of_second_tensor("retain") < PAGES // 20


@glibc_only
def test_by_default_glibc_pages_a_large_tensor_in_anew():  # the control: what the setting removes
    assert page_faults_of_second_tensor("default") > PAGES // 2
