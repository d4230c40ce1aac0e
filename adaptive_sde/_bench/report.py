"""What every benchmark and the demo write: tables as text or Markdown, JSON with the machine's
description, and matplotlib's off-screen backend for the plots."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def machine() -> dict[str, str]:
    """The machine and the software a result came from, for the JSON and the benchmark page."""
    import torchsde

    return {
        "date": datetime.date.today().isoformat(),
        "cpu": _cpu_name(),
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchsde": getattr(torchsde, "__version__", "unknown"),
        "platform": platform.platform(),
    }


def _cpu_name() -> str:
    try:  # Linux: the model name is in /proc/cpuinfo; platform.processor() is often empty
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def save_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with :func:`machine` to ``path``; non-finite floats become strings
    ("inf", "nan"), so the file is standard JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite({"machine": machine(), **payload}), indent=2) + "\n")
    return path


def load_json(path: Path) -> dict[str, Any]:
    """A file of :func:`save_json` with its values as the run had them ("inf", "nan" back to
    floats), so its tables and plots can be drawn again."""
    return _numbers(json.loads(path.read_text()))


def _numbers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and value.lower() in {"inf", "-inf", "nan"}:
        return float(value)
    return value


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False, left: int = 1
) -> str:
    """Cells already formatted as strings; the first ``left`` columns (names) left-aligned, the
    rest (numbers) right-aligned."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join(["---"] * left + ["---:"] * (len(header) - left)) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            f"{c:<{w}}" if i < left else f"{c:>{w}}"
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed); a clear message when
    matplotlib is missing, since it is an optional dependency (``pip install -e ".[examples]"``)."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(
            'the plots need matplotlib: pip install "adaptive-sde[examples]" (or matplotlib)'
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
