"""HistoryCallback outside a stage: no MLflow run, so it keeps the history and never imports MLflow."""

import subprocess
import sys

SCRIPT = """
import sys
from types import SimpleNamespace
from reasoning_rl.train.callbacks import HistoryCallback

cb = HistoryCallback()
state = SimpleNamespace(global_step=3, log_history=[])
cb.on_train_begin(None, state, None)
cb.on_log(None, state, None, logs={"loss": 0.5, "note": "text"})
cb.on_save(None, state, None)
cb.on_train_end(None, state, None)
assert cb.history == [{"loss": 0.5, "step": 3}], cb.history
assert "mlflow" not in sys.modules, "mlflow was imported"
"""


def test_history_without_mlflow_run_keeps_entries_and_skips_mlflow_import():
    # A fresh interpreter: other tests import mlflow into this one (a GPU box without MLflow relies on this).
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
