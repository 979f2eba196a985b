"""A cap on the memory that GRPO keeps for reuse: above a share of the machine's, free pages go back to the OS.

reasoning_rl/memory.py makes glibc keep freed memory (no page faults for each large tensor). Kept memory fragments:
GRPO's tensors change size from step to step (completion lengths vary), a freed chunk is not always the right size
for the next request, and the heap grows past the live peak. The default Qwen GRPO run grew to 24 GB resident and
was killed by the kernel at step 72 of 100 (2026-12-04), where the same run with glibc's defaults had peaked at
15.4 GB. `TrimFreedMemoryCallback` checks after every optimizer step: once the process holds more than
`RESIDENT_LIMIT_FRACTION` of the machine's memory, `malloc_trim(0)` hands every free page back, and the next steps
page in again what they use.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from pathlib import Path

from transformers import TrainerCallback

log = logging.getLogger(__name__)

# 0.7 of 24 GiB is 16.8 GiB: above the default Qwen run's 14.2 GiB after its first steps, below where it was killed.
RESIDENT_LIMIT_FRACTION = 0.7


def resident_bytes() -> int:
    """This process's resident memory (Linux's /proc/self/statm); 0 where there is none."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def resident_limit() -> int:
    """RESIDENT_LIMIT_FRACTION of the machine's physical memory, in bytes."""
    return int(RESIDENT_LIMIT_FRACTION * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def trim_freed_memory_above(limit: int | None = None) -> bool:
    """Hand glibc's free pages back to the OS (`malloc_trim(0)`) if this process holds more than `limit` bytes
    (default `resident_limit()`). True when it trimmed; False below the limit or where the C library is not glibc."""
    before = resident_bytes()
    if before <= (resident_limit() if limit is None else limit) or not sys.platform.startswith("linux"):
        return False
    try:
        malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl or another C library
        return False
    malloc_trim(0)
    log.info("resident memory %.1f GiB over the limit: free pages handed back, now %.1f GiB",
             before / 2**30, resident_bytes() / 2**30)
    return True


class TrimFreedMemoryCallback(TrainerCallback):
    """After each optimizer step, `trim_freed_memory_above()`."""

    def on_step_end(self, args, state, control, **kwargs):
        trim_freed_memory_above()
