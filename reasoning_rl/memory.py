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
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # glibc's malloc.h
INT_MAX = 2**31 - 1
TOP_PAD = 1 << 30  # extra heap asked of the OS at each growth: untouched pages cost nothing


def retain_freed_memory() -> bool:
    """Make glibc's malloc serve large requests from its heap (no mmap per tensor) and never shrink the heap by
    less than 2 GiB. True when set; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl or another C library
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = all(mallopt(option, value) == 1 for option, value in
                  ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, INT_MAX), (M_TOP_PAD, TOP_PAD)))
    log.debug("glibc malloc keeps freed memory for reuse: %s", applied)
    return applied
