"""The machine a run happens on, in words, for benchmark reports and model cards."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """e.g. ``AMD EPYC 7B13, 2 CPU cores``."""
    return f"{cpu_name()}, {os.cpu_count()} CPU cores"
