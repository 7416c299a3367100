"""What every benchmark states about where it ran: the machine line of its results file."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List

import pyro
import torch

__all__ = [
    "DATA_DIR",
    "machine",
    "command_line",
    "package_version",
    "write_markdown",
    "synchronize",
    "device_name",
    "results_header",
]


#: The shared data folder: ``$VAEFLOWS_DATA_DIR``, else ``../shared/data`` beside the repository
#: (as the notebooks read it). Every script's ``--data-dir`` defaults to it.
DATA_DIR = os.environ.get("VAEFLOWS_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))


def machine() -> str:
    """CPU count, torch threads, CPU model, GPU (if any) and library versions, on one line."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible"
    return (
        f"nproc {os.cpu_count()}, torch threads {torch.get_num_threads()}, CPU {cpu}, GPU {gpu}; "
        f"torch {torch.__version__}, pyro-ppl {pyro.__version__}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def package_version() -> str:
    """vaeflows' version and the repository's commit (``+ local changes`` if the tree differs from it)."""
    import vaeflows

    root = Path(__file__).resolve().parent.parent
    version = getattr(vaeflows, "__version__", "unknown")
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "vaeflows"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"vaeflows {version}"
    return f"vaeflows {version}, commit {commit}" + (" + local changes under vaeflows/" if dirty else "")


def command_line(script: str, argv: List[str]) -> str:
    """The command that reproduces this run, from the repository root."""
    return " ".join(["python", f"benchmarks/{script}", *(shlex.quote(a) for a in argv)])


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA), so that a clock read after it measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """``CPU`` or the GPU's model name."""
    return "CPU" if device.type == "cpu" else torch.cuda.get_device_name(device)


def results_header(title: str, script: str, argv: List[str], code: str) -> List[str]:
    """The first lines of a results file: title, when, the command, the code version, the machine."""
    import time

    return [
        f"# {title}",
        "",
        f"Written by `benchmarks/{script}` on {time.strftime('%Y-%m-%d %H:%M %Z')}.",
        "",
        f"- **Command**: `{command_line(script, argv)}`",
        f"- **Code**: {code}.",
        f"- **Machine**: {machine()}.",
    ]


def write_markdown(lines: List[str], path: Path) -> str:
    """Write ``lines`` as one markdown file at ``path`` (creating its folder); return the text."""
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


if __name__ == "__main__":
    print(machine())
    print(package_version())
    sys.exit(0)
