"""scripts/plot_signal: the learning-signal figure from GRPO history files."""

import json

import pytest

from scripts.plot_signal import main


def test_plot_signal_writes_a_png(tmp_path):
    history = [{"step": i, "reward": 1.0, "frac_reward_zero_std": 0.5, "rewards/correctness/mean": 0.1}
               for i in range(1, 4)]
    (tmp_path / "h.json").write_text(json.dumps(history))
    main([f"{tmp_path / 'h.json'}=run", "--out", str(tmp_path / "s.png")])
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_signal_missing_history_is_named(tmp_path):
    with pytest.raises(SystemExit, match="nope.json: no such history file"):
        main([str(tmp_path / "nope.json")])
