"""Prometheus text format 0.0.4, written the way prometheus_client's generate_latest writes it.

The one place that knows the format's escapes and number spelling, shared by
metrics.render (every family) and service_series (the per-service lines it
keeps). Byte-for-byte agreement with generate_latest is tested
(tests/unit/test_metrics.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client.utils import floatToGoString as _untyped_float_to_go

# prometheus_client ships it without annotations.
float_to_go: Callable[[float], str] = _untyped_float_to_go


def escape(value: str) -> str:
    """A label value's escapes: backslash, newline and double quote."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def header(name: str, documentation: str, kind: str) -> str:
    """A family's HELP and TYPE lines."""
    doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


def label_text(labels: Mapping[str, str]) -> str:
    """'{a="x",b="y"}' with the names sorted, as generate_latest orders them; '' for none."""
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape(labels[k])}"' for k in sorted(labels)) + "}"


def sample_line(name: str, labels: Mapping[str, str], value: float) -> str:
    return f"{name}{label_text(labels)} {float_to_go(value)}\n"
