"""Trainer callbacks: each numeric log entry kept and sent to MLflow at checkpoint boundaries; kept memory capped."""

from __future__ import annotations

import math
import sys
from typing import Any

from transformers import TrainerCallback

from reasoning_rl.memory import trim_freed_memory_above
from reasoning_rl.task.rewards import completion_text


def _active_run():
    """MLflow's active run, or None. No run can be active before something imported mlflow: training outside a
    stage (a benchmark, a machine without MLflow installed) then neither needs nor imports it."""
    mlflow = sys.modules.get("mlflow")
    return mlflow.active_run() if mlflow is not None else None


def _numeric(logs: dict[str, Any], step: int) -> dict[str, float]:
    entry = {
        k: float(v)
        for k, v in logs.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    entry["step"] = step
    return entry


class HistoryCallback(TrainerCallback):
    """Keeps every numeric log entry (for the metrics files) and forwards it to MLflow when a run is active.

    Entries reach MLflow when a checkpoint is saved (and at the end), not at once: after a crash the rerun
    resumes from the last checkpoint, so the steps logged after it would otherwise be logged twice, once by
    the lost trajectory and once by the resumed one. On resume, the history restarts from the checkpoint's
    `log_history`, and entries MLflow lacks (a crash between checkpoint and flush) are logged then.

    For GRPO it also logs a sample of completions with their rewards per logging step, read from the
    trainer's own buffers (`trainer._logs`), as an MLflow table (overwritten by a resumed run: same name).
    """

    def __init__(self, trainer: Any = None, completions_per_log: int = 4) -> None:
        self.history: list[dict[str, float]] = []
        self._pending: list[dict[str, float]] = []
        self.trainer = trainer
        self.completions_per_log = completions_per_log

    def on_train_begin(self, args, state, control, **kwargs):
        from reasoning_rl.ops.tracking import logged_steps

        if state.global_step == 0:
            return
        self.history = [_numeric(e, int(e["step"])) for e in state.log_history if "step" in e]
        run = _active_run()
        done = logged_steps(run.info.run_id) if run is not None else set()
        self._pending = [e for e in self.history if int(e["step"]) not in done]
        self._flush()

    def on_log(self, args, state, control, logs=None, **kwargs):
        entry = _numeric(logs or {}, state.global_step)
        self.history.append(entry)
        self._pending.append(entry)
        if _active_run() is not None:
            self._log_completions(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        self._flush()

    def on_train_end(self, args, state, control, **kwargs):
        self._flush()

    def _flush(self) -> None:
        if _active_run() is None:
            return
        from reasoning_rl.ops.tracking import log_metrics

        for entry in self._pending:
            log_metrics(entry, step=int(entry["step"]))
        self._pending = []

    def _log_completions(self, step: int) -> None:
        from reasoning_rl.ops.tracking import log_table

        buffers = getattr(self.trainer, "_logs", None)
        if not buffers or not buffers.get("completion"):
            return
        n = min(self.completions_per_log, len(buffers["completion"]))
        rows = {
            "step": [step] * n,
            "completion": [completion_text(c)[:2000] for c in list(buffers["completion"])[-n:]],
            "advantage": list(buffers["advantages"])[-n:],
        }
        for name, values in buffers["rewards"].items():
            rows[f"reward_{name}"] = list(values)[-n:]
        log_table(rows, artifact_file=f"completions/step_{step:05d}.json")



class TrimFreedMemoryCallback(TrainerCallback):
    """After each optimizer step, `memory.trim_freed_memory_above()`: a cap on the memory glibc keeps for reuse."""

    def on_step_end(self, args, state, control, **kwargs):
        trim_freed_memory_above()

def summarize_history(history: list[dict[str, float]], keys: list[str], window: int = 5) -> dict[str, float]:
    """First/last-window means of selected keys (e.g. loss, rewards) for the stage's metrics file."""
    out: dict[str, float] = {}
    for key in keys:
        values = [h[key] for h in history if key in h]
        if not values:
            continue
        safe = key.replace("/", "_")
        out[f"{safe}_first"] = sum(values[:window]) / len(values[:window])
        out[f"{safe}_last"] = sum(values[-window:]) / len(values[-window:])
    return out


def seconds_per_step(history: list[dict[str, float]]) -> float | None:
    """Mean seconds per optimizer step from TRL's own `step_time` log entries (sampling, forward and backward of
    every micro-batch of a step; each entry is the mean over the steps since the previous one, weighted so).

    Unlike the process's wall time over the step count, right for a resumed run too: its history restarts from
    the checkpoint's log, so the steps before the crash keep their own times. None when no entry has a step_time.
    """
    total, steps, last = 0.0, 0, 0
    for entry in sorted((h for h in history if "step_time" in h), key=lambda h: h["step"]):
        covered = int(entry["step"]) - last
        total, steps, last = total + entry["step_time"] * covered, steps + covered, int(entry["step"])
    return round(total / steps, 2) if steps else None
