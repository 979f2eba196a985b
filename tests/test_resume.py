"""Kill and resume: a stage killed with SIGKILL after a checkpoint resumes from it when rerun (as `dvc repro`
would), in the same MLflow run, and ends with the adapter an uninterrupted run with the same seed produces.

Each stage runs three times in scratch folders (uninterrupted, killed, rerun) with tiny settings, as the real
stage module (`python -m stages.<name>`) with the real SmolLM2 model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from stage_runs import TINY, make_workdir, run_stage, stage_cmd, stage_env

from reasoning_rl.train.callbacks import seconds_per_step

pytestmark = pytest.mark.slow


def kill_after_checkpoint(stage: str, work: Path, step: int) -> int:
    """Start the stage, SIGKILL it once checkpoint-<step> is complete; return the newest checkpoint step."""
    done = work / "models" / stage / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json"
    proc = subprocess.Popen(stage_cmd(stage), cwd=work, env=stage_env(work),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not done.is_file():
        assert proc.poll() is None, f"stage {stage} exited ({proc.returncode}) before checkpoint-{step}"
        assert time.monotonic() < deadline, f"no checkpoint-{step} after 600 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (work / "models" / stage / "adapter").exists(), "the stage finished before it was killed"
    return max(int(p.name.split("-")[1]) for p in (work / "models" / stage / "checkpoints").glob("checkpoint-*"))


def stage_runs(work: Path, stage: str):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reasoning-rl")
    return client, client.search_runs([experiment.experiment_id], filter_string=f"tags.stage = '{stage}'")


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, gsm8k_dir):
    """For sft then grpo: an uninterrupted run, and a run killed after checkpoint-2 then rerun."""
    root = tmp_path_factory.mktemp("resume")
    out = {}
    for stage in ("sft", "grpo"):
        ref, killed = make_workdir(root / f"{stage}-ref", gsm8k_dir), make_workdir(root / f"{stage}-kill", gsm8k_dir)
        if stage == "grpo":  # both continue the same SFT adapter
            for work in (ref, killed):
                shutil.copytree(out["sft"]["ref"] / "models/sft/adapter", work / "models/sft/adapter")
                run_stage("select", work)  # GRPO reads its prompts from the select stage
        run_stage(stage, ref)
        before_kill = kill_after_checkpoint(stage, killed, step=2)
        rerun = run_stage(stage, killed)
        match = re.search(r"resuming from \S+checkpoint-(\d+)", rerun.stderr)
        out[stage] = {"ref": ref, "killed": killed, "before_kill": before_kill,
                      "resumed_from": int(match.group(1)) if match else None}
        final = json.loads((killed / f"metrics/{stage}.json").read_text())["steps"]
        print(f"{stage}: killed with newest checkpoint-{before_kill}, resumed from step "
              f"{out[stage]['resumed_from']}, final step {final}")
    return out


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_resume_starts_from_last_checkpoint(resumed, stage):
    r = resumed[stage]
    assert r["before_kill"] >= 2 and r["resumed_from"] == r["before_kill"]


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_resume_reaches_final_step(resumed, stage):
    metrics = json.loads((resumed[stage]["killed"] / f"metrics/{stage}.json").read_text())
    assert metrics["steps"] == TINY[stage]["max_steps"]


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_resume_history_file_has_each_step_once(resumed, stage):
    history = json.loads((resumed[stage]["killed"] / f"metrics/{stage}_history.json").read_text())
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_resume_continues_same_mlflow_run(resumed, stage):
    client, runs = stage_runs(resumed[stage]["killed"], stage)
    assert len(runs) == 1, "the rerun must reopen the killed run, not start a second one"
    (run,) = runs
    assert run.info.status == "FINISHED" and run.data.tags.get("resumed") == "true"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert steps == [1, 2, 3, 4], "no duplicated or missing steps"


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_resume_removes_checkpoints_when_done(resumed, stage):
    assert not (resumed[stage]["killed"] / "models" / stage / "checkpoints").exists()


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_resume_adapter_matches_uninterrupted_run(resumed, stage):
    """Same seed, same data order (the Trainer skips the batches already seen), RNG restored from the
    checkpoint: on this CPU the resumed adapter equals the uninterrupted one up to float noise. The tolerance
    allows for kernels that are not bit-reproducible across processes (threaded reductions)."""
    import torch
    from safetensors.torch import load_file

    a = load_file(resumed[stage]["ref"] / f"models/{stage}/adapter/adapter_model.safetensors")
    b = load_file(resumed[stage]["killed"] / f"models/{stage}/adapter/adapter_model.safetensors")
    assert a.keys() == b.keys()
    start = load_file(resumed[stage]["ref"] / "models/sft/adapter/adapter_model.safetensors") if stage == "grpo" else {
        k: torch.zeros_like(v) for k, v in a.items() if "lora_B" in k}  # SFT starts with lora_B = 0
    assert any(not torch.equal(a[k], start[k]) for k in start), "training did not move the adapter: vacuous check"
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    print(f"{stage}: max |adapter difference| = {worst:.3g}")
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-5) for k in a)


def test_resume_grpo_seconds_per_step_covers_the_steps_before_the_kill(resumed):
    """metrics/grpo.json's seconds_per_step is TRL's step times over all 4 steps, the 2 before the checkpoint
    included (the rerun's own wall time covers only the 2 after it)."""
    work = resumed["grpo"]["killed"]
    times = [h["step_time"] for h in json.loads((work / "metrics/grpo_history.json").read_text()) if "step_time" in h]
    assert len(times) == TINY["grpo"]["max_steps"]
    assert json.loads((work / "metrics/grpo.json").read_text())["seconds_per_step"] == round(sum(times) / len(times), 2)


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        # a run resumed from checkpoint-2: the checkpoint's log (10 s steps) then the rerun's (12 s); TRL's final
        # summary entry has no step_time
        ([{"step": 1, "step_time": 10.0, "loss": 0.1}, {"step": 2, "step_time": 10.0},
          {"step": 3, "step_time": 12.0}, {"step": 4, "step_time": 12.0}, {"step": 4, "train_runtime": 30.0}], 11.0),
        ([{"step": 2, "step_time": 10.0}, {"step": 3, "step_time": 16.0}], 12.0),  # logging_steps 2, then 1
        ([{"step": 1, "loss": 0.1}], None),  # no step times logged
    ],
)
def test_seconds_per_step_from_trls_step_times(history, expected):
    assert seconds_per_step(history) == expected
