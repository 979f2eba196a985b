"""Keep memory that the process frees for its own reuse, instead of handing it back to the OS after each large tensor.

glibc's malloc serves every request above its mmap threshold (32 MB at most) with a fresh `mmap` and unmaps it on
free, so each large tensor is paged in again, one zero-filled page fault per 4 KB, at its first touch. A GRPO step
makes many: SmolLM2's fp32 logits for 16 completions of 160 tokens are [16, 160, 49152], 503 MB, and the log-softmax,
its backward and the entropy make more of that size. Measured on this project's 2-core VM
(`python -m benchmarks.bench_grpo_phases`, reports/grpo_phases_retain_memory.txt): 0.3-1.1 million page faults per
SmolLM2 step and ~4 million per Qwen step by default, a few hundred with freed memory kept; the step went from 25.5
to 20.1 s (SmolLM2) and from 68.5 to 48.3 s (Qwen).

PyTorch's CPU tuning guides get the same effect by preloading jemalloc or tcmalloc; this sets glibc's own knobs
(`mallopt`) at run time, so nothing else has to be installed. The price: the process keeps its peak heap (the memory is
reused, not returned). Not glibc (macOS, musl): nothing changes.

Kept memory fragments: GRPO's tensors change size from step to step (completion lengths vary), a freed chunk is not
always the right size for the next request, and the heap grows past the live peak. The default Qwen GRPO run grew to
24 GB resident and was killed by the kernel at step 72 of 100 (2026-12-04), where the same run with glibc's defaults
had peaked at 15.4 GB. So GRPO caps it (`train.callbacks.TrimFreedMemoryCallback`, after every optimizer step): once
the process holds more than `RESIDENT_LIMIT_FRACTION` of the machine's memory, `malloc_trim(0)` hands every free page
back, and the next steps page in again what they use.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # glibc's malloc.h
INT_MAX = 2**31 - 1
TOP_PAD = 1 << 30  # extra heap asked of the OS at each growth: untouched pages cost nothing
# 70 % of the machine's memory: 16.5 GiB of this project's 23.5 GiB machine, above the default Qwen run's 14.2 GiB
# after its first steps, below the 24 GB where it was killed.
RESIDENT_LIMIT_FRACTION = 0.7


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, loaded once; None where the C library is another (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):  # musl or another C library
        return None
    return libc


def retain_freed_memory() -> bool:
    """Make glibc's malloc serve large requests from its heap (no mmap per tensor) and never shrink the heap by
    less than 2 GiB. True when set; False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    applied = all(libc.mallopt(option, value) == 1 for option, value in
                  ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, INT_MAX), (M_TOP_PAD, TOP_PAD)))
    log.debug("glibc malloc keeps freed memory for reuse: %s", applied)
    return applied


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
    libc = _glibc()
    if before <= (resident_limit() if limit is None else limit) or libc is None:
        return False
    libc.malloc_trim(0)
    log.info("resident memory %.1f GiB over the limit: free pages handed back, now %.1f GiB",
             before / 2**30, resident_bytes() / 2**30)
    return True
