"""What machine this is (no keras import): CPU model and core count, for run.json, model
cards and benchmark reports."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_host() -> str:
    """The CPU model and core count of this machine, e.g. for run.json and model cards."""
    return f"{cpu_model()}, {os.cpu_count()} logical cores, {platform.system()}"
