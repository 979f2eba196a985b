"""Prefect flows: orchestration only (the library never imports Prefect).

Defaults set here, before Prefect is imported (an explicit environment variable still wins):
- telemetry off: PREFECT_SERVER_ANALYTICS_ENABLED=false (and this project runs offline);
- the ephemeral API server gets 90 s to start (Prefect's default 20 s is too short on a busy 2-core machine).
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
