"""Overhead of orchestration: the smoke pipeline by plain `dvc repro` vs by the Prefect flow, both with MLflow.

Run: python -m benchmarks.bench_flow_overhead [--repeats 1] [--out reports/flow_overhead.json]

Both variants run all four stages (`--force`, so DVC's cache does not skip any) in one scratch copy of the
project, alternating (dvc, flow, dvc, flow, ...) so that other load on the machine hits both alike. Prefect's
ephemeral API server is started before the timed flow runs and its start-up is reported separately: it is paid
once per process, not per pipeline run (set PREFECT_API_URL to a running server to avoid it altogether).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from benchmarks.scratch_project import scratch_project

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))


def main(
    repeats: Annotated[int, typer.Option(help="pairs of (dvc repro, flow) runs")] = 1,
    data_dir: Annotated[Path, typer.Option(help="GSM8K folder")] = ROOT.parent / "shared/data/gsm8k",
    out: Annotated[Path, typer.Option(help="where to write the JSON result")] = ROOT / "reports/flow_overhead.json",
) -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect import flow

    from flows.pipeline import pipeline

    @flow
    def noop() -> None:
        return None

    with tempfile.TemporaryDirectory() as tmp:
        work = scratch_project(Path(tmp), data_dir, "profiles/smoke.yaml")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

        start = time.perf_counter()
        noop()  # starts the ephemeral API server (when PREFECT_API_URL is unset)
        first_flow = time.perf_counter() - start
        start = time.perf_counter()
        noop()
        warm_flow = time.perf_counter() - start

        plain, flows = [], []
        for i in range(repeats):
            print(f"[{i + 1}/{repeats}] dvc repro --force ...", flush=True)
            start = time.perf_counter()
            subprocess.run([DVC, "repro", "--force"], cwd=work, env=env, check=True, capture_output=True)
            plain.append(time.perf_counter() - start)
            print(f"[{i + 1}/{repeats}] prefect flow (force) ...", flush=True)
            start = time.perf_counter()
            pipeline(force=True, project_dir=str(work))
            flows.append(time.perf_counter() - start)

    result = {
        "repeats": repeats,
        "dvc_repro_seconds": [round(s, 1) for s in plain],
        "prefect_flow_seconds": [round(s, 1) for s in flows],
        "ratio_flow_over_dvc": round(statistics.median(flows) / statistics.median(plain), 3),
        "ephemeral_server_startup_seconds": round(first_flow - warm_flow, 1),
        "empty_flow_seconds_warm": round(warm_flow, 2),
        "cpu_count": os.cpu_count(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| variant | wall (s, median) |\n|---|---|")
    print(f"| dvc repro | {statistics.median(plain):.1f} |")
    print(f"| Prefect flow + MLflow parent run | {statistics.median(flows):.1f} |")
    print(f"ratio flow / dvc: {result['ratio_flow_over_dvc']:.3f}")
    print(f"Prefect ephemeral server start-up (once per process): {result['ephemeral_server_startup_seconds']:.1f} s")


if __name__ == "__main__":
    typer.run(main)
