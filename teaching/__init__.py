"""Teaching code: a from-scratch GRPO (and PPO, for the critic's memory cost) to read, run and compare with TRL.

Nothing in the pipeline imports this package: `dvc repro` trains with TRL (reasoning_rl/train/grpo.py), so
editing a file here changes no stage's result. tests/test_mini_grpo_vs_trl.py checks it against TRL's own code.
Run the explainers as `python -m teaching.<name>` (docs/grpo_explained.md).
"""
