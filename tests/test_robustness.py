"""Bad input refused clearly, tracking faults handled, runs traceable, weights loaded safely (docs/robustness.md).

The stage-level tests run the real stage modules in scratch folders; the MLflow fault test uses a real
`mlflow server` (tests/servers.py) that it stops while the stage trains.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from servers import free_port, mlflow_server
from stage_runs import ROOT, TINY, make_workdir, run_stage, stage_cmd, stage_env

from reasoning_rl.config import load_params
from reasoning_rl.model.loading import UnsafeWeightsError, load_model, require_safetensors_adapter
from reasoning_rl.ops import tracking

GOOD_ROW = {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
            "answer": "Tom has 3+4 = <<3+4=7>>7 apples.\n#### 7"}


def gsm8k_folder(path: Path, train_lines: list[bytes]) -> Path:
    path.mkdir(parents=True)
    good = [json.dumps({**GOOD_ROW, "question": f"{GOOD_ROW['question']} (#{i})"}).encode() for i in range(12)]
    (path / "train.jsonl").write_bytes(b"\n".join(good + train_lines))  # no final newline: a cut-off download
    (path / "test.jsonl").write_bytes(b"\n".join(good[:4]) + b"\n")
    return path


def prepare_workdir(tmp_path: Path, train_lines: list[bytes], skip: bool) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    data = gsm8k_folder(tmp_path / "gsm8k", train_lines)
    params = {"base": TINY["base"], "prepare": {"data_dir": str(data), "val_size": 2, "skip_bad_rows": skip}}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    return work


# Each kind of bad row once, after 12 good ones (lines 13-17 of train.jsonl).
BAD_LINES = [
    b'{"question": "caf\xe9?", "answer": "1\\n#### 1"}',               # non-UTF-8 byte (latin-1 e-acute)
    json.dumps({"question": "no answer field"}).encode(),             # missing field
    json.dumps({"question": "q?", "answer": "it is 5"}).encode(),     # no ####
    json.dumps({**GOOD_ROW, "question": f"{GOOD_ROW['question']} (#0)"}).encode(),  # duplicated question
    json.dumps(GOOD_ROW).encode()[:40],                               # truncated last line
]


@pytest.mark.slow
def test_prepare_stage_stops_naming_file_line(tmp_path):
    work = prepare_workdir(tmp_path, BAD_LINES, skip=False)
    proc = run_stage("prepare", work, check=False)
    assert proc.returncode == 1
    assert re.search(r"error: \S+train.jsonl:13: not valid UTF-8", proc.stderr), proc.stderr[-2000:]
    assert not (work / "data/prepared/train.jsonl").exists()


@pytest.mark.slow
def test_prepare_stage_skips_and_reports_counts(tmp_path):
    import mlflow

    work = prepare_workdir(tmp_path, BAD_LINES, skip=True)
    run_stage("prepare", work)
    stats = json.loads((work / "data/prepared/stats.json").read_text())
    expected = {"train.bad_json": 1, "train.not_utf8": 1, "train.missing_field": 1, "train.bad_answer": 1,
                "train.duplicate": 1}
    assert stats["skipped"] == {"total": 5, **expected}
    assert stats["rows"] == {"train": 10, "val": 2, "test": 4}
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("reasoning-rl").experiment_id],
                                filter_string="tags.stage = 'prepare'")
    assert run.data.metrics["skipped.total"] == 5 and run.data.metrics["skipped.train.duplicate"] == 1


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("grpo", {"max_stepz": 3}, r"unknown key\(s\) in params section 'grpo': \['max_stepz'\]"),
        ("sft", {"save_steps": "10"}, r"sft.save_steps must be int, got str '10'"),
        ("grpo", {"per_device_train_batch_size": 6}, r"grpo.per_device_train_batch_size \(6\) must be divisible"),
        ("grpo", {"max_completion_length": 0}, r"grpo.max_completion_length \(0\) must be > 0"),
        ("grpo", {"save_steps": 0}, r"grpo.save_steps \(0\) must be > 0"),
        ("prepare", {"skip_bad_rows": "yes"}, r"prepare.skip_bad_rows must be bool"),
    ],
)
def test_load_params_names_bad_key(tmp_path, section, values, message):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({section: values}))
    with pytest.raises(SystemExit, match=message):
        load_params(path)


def test_stage_bad_params_fail_before_model_or_tracking(tmp_path):
    """The stage exits on load_params, its first step: no MLflow store, model or data is touched."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"grpo": {"per_device_train_batch_size": 6}}))
    proc = subprocess.run([sys.executable, "-m", "stages.grpo"], cwd=tmp_path, env=stage_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "grpo.per_device_train_batch_size (6)" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "models").exists()


# ---- tracking faults ----------------------------------------------------------------------------------


def test_stage_fails_fast_when_tracking_unreachable(tmp_path, gsm8k_dir):
    work = make_workdir(tmp_path / "work", gsm8k_dir)
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.perf_counter()
    proc = run_stage("sft", work, check=False, MLFLOW_TRACKING_URI=uri)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 1
    assert f"error: MLflow tracking server {uri} is unreachable" in proc.stderr
    assert "Converting" not in proc.stderr and not (work / "models").exists()  # no model loaded, no training
    print(f"unreachable tracking server: stage exited after {elapsed:.1f} s")
    assert elapsed < 60  # python + torch imports; the health check itself times out after 5 s


@pytest.mark.slow
def test_tracking_server_stopped_mid_run(tmp_path, gsm8k_dir):
    """A real MLflow server, stopped once the stage has logged its first steps: training goes on, the
    adapter and metrics files are written, and the stage exits non-zero naming the tracking failure."""
    from mlflow import MlflowClient

    work = make_workdir(tmp_path / "work", gsm8k_dir)
    params = yaml.safe_load((work / "params.yaml").read_text())
    # 6 steps, metrics reach MLflow at each checkpoint (steps 2, 4, 6): the server goes after step 2 arrives.
    params["sft"] |= {"max_steps": 6, "save_steps": 2}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    with mlflow_server(tmp_path) as server:
        env = stage_env(work) | {"MLFLOW_TRACKING_URI": server.uri}
        proc = subprocess.Popen(stage_cmd("sft"), cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        client = MlflowClient(tracking_uri=server.uri)
        deadline = time.monotonic() + 600
        logged: list = []
        while not logged:
            assert proc.poll() is None, "stage finished before the server could be stopped"
            assert time.monotonic() < deadline
            time.sleep(0.2)
            runs = client.search_runs(["0", *[e.experiment_id for e in client.search_experiments()]])
            logged = [r for r in runs if r.data.tags.get("stage") == "sft" and "loss" in r.data.metrics]
        steps_before_stop = max(m.step for m in client.get_metric_history(logged[0].info.run_id, "loss"))
        server.stop()
        _, stderr = proc.communicate(timeout=600)
    print(f"server stopped after step {steps_before_stop} was logged; stage exit code {proc.returncode}; "
          f"{stderr.strip().splitlines()[-1]}")
    assert steps_before_stop < 6
    assert proc.returncode == 1
    assert "error: MLflow logging stopped during stage sft" in stderr
    assert (work / "models/sft/adapter/adapter_model.safetensors").is_file()
    assert json.loads((work / "metrics/sft.json").read_text())["steps"] == 6
    assert [h["step"] for h in json.loads((work / "metrics/sft_history.json").read_text()) if "loss" in h] == list(
        range(1, 7))


def test_stage_run_survives_logging_failure_then_raises(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    after_failure = []
    with pytest.raises(tracking.TrackingError, match=r"log_metrics failed: ConnectionError: server gone"):
        with tracking.stage_run("unit", {"x": 1}):
            def boom(*args, **kwargs):
                raise ConnectionError("server gone")
            monkeypatch.setattr(mlflow, "log_metrics", boom)
            tracking.log_metrics({"loss": 1.0}, step=1)
            tracking.log_metrics({"loss": 0.5}, step=2)  # skipped: the first failure is remembered
            after_failure.append(True)
    assert after_failure == [True]  # the block ran to its end


# ---- traceability -------------------------------------------------------------------------------------


def test_dvc_md5_matches_dvc_lock(gsm8k_dir):
    """Our hash of the GSM8K folder is the one `dvc repro` wrote into dvc.lock for that dependency."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    (dep,) = [d for d in lock["stages"]["prepare"]["deps"] if d["path"] == "../shared/data/gsm8k"]
    assert tracking.dvc_md5(gsm8k_dir) == dep["md5"]


def test_dvc_md5_of_a_file_is_its_md5(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    assert tracking.dvc_md5(path) == hashlib.md5(b'{"a": 1}\n').hexdigest()


def test_stage_run_records_provenance(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    data = tmp_path / "train.jsonl"
    data.write_text('{"q": 1}\n')
    with tracking.stage_run("unit", {"sft": {"max_steps": 3}}, inputs=[data]) as run:
        run_id = run.info.run_id
    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    assert re.fullmatch(r"[0-9a-f]{40}", tags["git_commit"]) and tags["git_dirty"] in ("true", "false")
    assert tags[f"dvc_md5.{data}"] == hashlib.md5(b'{"q": 1}\n').hexdigest()
    assert tags["params_md5"] == tracking.params_md5({"sft": {"max_steps": 3}})
    assert tags["version.torch"] and tags["version.trl"] == "1.13.0" and tags["version.mlflow"]


# ---- security -----------------------------------------------------------------------------------------


def test_pickle_only_adapter_is_refused(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UnsafeWeightsError, match=r"only adapter_model.bin .* safetensors only"):
        load_model("embedded:SmolLM2-135M-Instruct", adapter=tmp_path)


def test_safetensors_adapter_is_accepted(tmp_path):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    (tmp_path / "adapter_model.bin").write_bytes(b"")
    assert require_safetensors_adapter(tmp_path) == tmp_path


# Model text and dataset rows are parsed, never run: no remote model code, no eval/exec, no pickle, and no
# sympy string parsing (`sympify`/`parse_expr` call eval; answer_check.py keeps math-verify off that path).
@pytest.mark.parametrize(
    "pattern",
    [r"trust_remote_code\s*=\s*True", r"(?<![\w.])(eval|exec)\(", r"pickle\.loads?\(", r"\b(sympify|parse_expr)\("],
)
def test_source_never_runs_remote_or_dataset_code(pattern):
    sources = [*ROOT.glob("reasoning_rl/*.py"), *ROOT.glob("stages/*.py")]
    hits = [f"{p.name}:{i}" for p in sources for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(pattern, line)]
    assert not hits


def test_makefile_mlflow_ui_binds_localhost():
    out = subprocess.run(["make", "-n", "mlflow-ui"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "--host 127.0.0.1" in out


def test_test_servers_bind_localhost(tmp_path):
    with mlflow_server(tmp_path) as server:
        assert server.uri.startswith("http://127.0.0.1:")
        out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout if shutil.which("ss") else ""
        port = server.uri.rsplit(":", 1)[1]
        assert f"0.0.0.0:{port}" not in out and f"*:{port}" not in out
