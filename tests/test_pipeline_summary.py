"""scripts/pipeline_summary.py: the verdict's tables, read from metrics/ as `dvc metrics show` does."""

import json

from reasoning_rl import paths


def test_summary_prints_the_sampled_paired_test_beside_mcnemar(tmp_path, monkeypatch, capsys):
    from scripts.pipeline_summary import main

    monkeypatch.chdir(tmp_path)
    pair = {"strict": {"delta": 0.02, "p": 0.057}, "flexible": {"delta": 0.018, "p": 0.097},
            "sampled": {"strict": {"delta": 0.03, "ci_low": 0.01, "ci_high": 0.05, "p": 0.004, "k": 4},
                        "flexible": {"delta": 0.02, "ci_low": 0.0, "ci_high": 0.04, "p": 0.05, "k": 4}}}
    paths.PAIRED_METRICS.parent.mkdir(parents=True)
    paths.PAIRED_METRICS.write_text(json.dumps({"sft_vs_grpo": pair}))
    main()
    lines = capsys.readouterr().out.splitlines()
    assert "| sft_vs_grpo | greedy, McNemar exact | +2.0 pt | 0.057 | +1.8 pt | 0.097 |" in lines
    sampled = ("| sft_vs_grpo | sampled pass@1 (k = 4), sign-flip | +3.0 pt [+1.0, +5.0] | 0.004 "
               "| +2.0 pt [+0.0, +4.0] | 0.05 |")
    assert sampled in lines
