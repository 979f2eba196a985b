"""User command lines (`python -m scripts.<name>`): demo, run comparison, report, engine set-up, DVC deps check."""
