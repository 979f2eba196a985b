"""What every stage shares: logging set-up, timing, one-line errors. The params file is read by
`reasoning_rl.config.load_params(paths.params_file())`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from reasoning_rl import memory
from reasoning_rl.model.engine import EngineError
from reasoning_rl.model.loading import ModelNotAvailableError
from reasoning_rl.ops.registry import AliasNotFoundError
from reasoning_rl.ops.tracking import TrackingError
from reasoning_rl.task.gsm8k import DataError


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextmanager
def timed(metrics: dict) -> Iterator[None]:
    """Record the wall time of the block as metrics['wall_seconds']."""
    start = time.perf_counter()
    yield
    metrics["wall_seconds"] = round(time.perf_counter() - start, 1)


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(), glibc keeping freed memory for reuse (reasoning_rl/memory.py); expected failures exit
    1 with one clear line, not a traceback.

    Expected: bad data, tracking faults, unsafe weights, a registry alias with nothing behind it, a generation
    engine that is missing, died or hung.
    """
    memory.retain_freed_memory()  # large tensors reuse freed memory instead of page-faulting in anew
    try:
        main()
    except (DataError, TrackingError, ModelNotAvailableError, AliasNotFoundError, EngineError) as err:
        raise SystemExit(f"error: {err}") from None
