"""What every stage shares: reading and validating the params file, logging set-up, timing."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from reasoning_rl.config import Params, params_from_dict
from reasoning_rl.data import DataError
from reasoning_rl.modeling import ModelNotAvailableError
from reasoning_rl.registry import AliasNotFoundError
from reasoning_rl.tracking import TrackingError

PARAMS_ENV = "REASONING_RL_PARAMS"  # another params file (e.g. profiles/smoke.yaml) instead of params.yaml


def params_path() -> Path:
    return Path(os.environ.get(PARAMS_ENV, "params.yaml"))


def load_params(path: Path | None = None) -> Params:
    """Read and validate the whole params file before anything heavy happens (fail fast, name the key)."""
    path = path or params_path()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise SystemExit(f"{path}: params file not found") from None
    except yaml.YAMLError as err:
        raise SystemExit(f"{path}: invalid YAML: {err}") from None
    try:
        return params_from_dict(data)
    except ValueError as err:
        raise SystemExit(f"{path}: {err}") from None


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
    """Run a stage's main(); expected failures exit 1 with one clear line, not a traceback.

    Expected: bad data, tracking faults, unsafe weights, a registry alias with nothing behind it.
    """
    try:
        main()
    except (DataError, TrackingError, ModelNotAvailableError, AliasNotFoundError) as err:
        raise SystemExit(f"error: {err}") from None
