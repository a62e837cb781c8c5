"""What every benchmark records about the machine it ran on (shared by the benchmark scripts)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def machine_info(**versions) -> dict:
    """uname, CPU model, core counts and the Python version, plus the package ``versions`` given."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {"uname": " ".join(platform.uname()), "processor": platform.processor() or model, "cpu_model": model,
            "cpu_count": os.cpu_count(), "usable_cores": usable, "python": sys.version.split()[0], **versions}
