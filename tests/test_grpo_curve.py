"""The learning-curve script's checkpoint copier: complete checkpoints only, each once."""

from pathlib import Path

import pytest

from benchmarks.grpo_curve import ADAPTER_FILES, add_final, copy_complete, watch


def make_checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    ckpt = root / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    for name in ADAPTER_FILES:
        if complete or name != "trainer_state.json":  # the trainer writes its state last
            (ckpt / name).write_text(f"{name} {step}")
    return ckpt


def test_copies_complete_checkpoints_in_step_order(tmp_path):
    for step in (20, 10):
        make_checkpoint(tmp_path / "src", step)
    copied = copy_complete(tmp_path / "src", tmp_path / "dst")
    assert [p.name for p in copied] == ["checkpoint-10", "checkpoint-20"]
    assert (tmp_path / "dst/checkpoint-20/adapter_model.safetensors").read_text() == "adapter_model.safetensors 20"


def test_skips_a_checkpoint_still_being_written(tmp_path):
    make_checkpoint(tmp_path / "src", 30, complete=False)
    assert copy_complete(tmp_path / "src", tmp_path / "dst") == []
    assert not (tmp_path / "dst/checkpoint-30").exists()


def test_does_not_copy_a_checkpoint_twice(tmp_path):
    make_checkpoint(tmp_path / "src", 10)
    copy_complete(tmp_path / "src", tmp_path / "dst")
    (tmp_path / "src/checkpoint-10/adapter_model.safetensors").write_text("changed")
    assert copy_complete(tmp_path / "src", tmp_path / "dst") == []
    assert (tmp_path / "dst/checkpoint-10/adapter_model.safetensors").read_text() == "adapter_model.safetensors 10"


def test_final_adapter_joins_the_curve_at_the_stage_last_step(tmp_path):
    adapter = make_checkpoint(tmp_path, 0)  # any folder with the adapter files
    (tmp_path / "grpo.json").write_text('{"steps": 100}')
    add_final(adapter, tmp_path / "grpo.json", tmp_path / "dst")
    assert (tmp_path / "dst/checkpoint-100/adapter_model.safetensors").read_text() == "adapter_model.safetensors 0"


def test_watch_refuses_a_folder_holding_an_earlier_run(tmp_path):
    make_checkpoint(tmp_path / "dst", 10)
    with pytest.raises(SystemExit, match="already holds checkpoints"):
        watch(tmp_path / "src", tmp_path / "dst", interval=0)
