"""Units: the only place where quantities are converted.

Capacities are binary (KiB, MiB, GiB, TiB), bandwidths and rates decimal
(GB/s = 1e9 B/s), time is an integer number of nanoseconds (docs/model.md §7).
Bandwidths are held as integer bytes per second so that every duration is an
exact integer ceiling division: the same inputs give the same nanoseconds on
every machine.
"""

from __future__ import annotations

import math
import re

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4

KB = 1000
MB = 1000**2
GB = 1000**3
TB = 1000**4

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

TFLOPS = 10**12  # FLOP/s per TFLOP/s

_SIZE_UNITS = {
    "": 1, "b": 1, "B": 1,
    "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB,
    "KB": KB, "MB": MB, "GB": GB, "TB": TB,
    "K": KiB, "M": MiB, "G": GiB, "T": TiB,  # nccl-tests style -b 8 -e 1G
    "k": KiB, "m": MiB, "g": GiB, "t": TiB,
}
_BW_UNITS = {"B/s": 1, "KB/s": KB, "MB/s": MB, "GB/s": GB, "TB/s": TB}
_TIME_UNITS = {"ns": 1, "us": NS_PER_US, "ms": NS_PER_MS, "s": NS_PER_S}
_NUM = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def transfer_ns(size_bytes: int, bw_bytes_per_s: int) -> int:
    """Serialization time of ``size_bytes`` at ``bw_bytes_per_s``, rounded up to 1 ns."""
    if bw_bytes_per_s <= 0:
        raise ValueError(f"bandwidth must be > 0 B/s, got {bw_bytes_per_s}")
    if size_bytes <= 0:
        return 0
    return -(-int(size_bytes) * NS_PER_S // int(bw_bytes_per_s))


def compute_ns(flops: int, flops_per_s: int) -> int:
    """Time to execute ``flops`` at ``flops_per_s``, rounded up to 1 ns."""
    return transfer_ns(flops, flops_per_s)


def scale_rate(rate_per_s: int, factor: float) -> int:
    """A rate multiplied by ``factor`` (e.g. an efficiency), kept an integer >= 1."""
    return max(1, int(round(rate_per_s * factor)))


def _split(text: str) -> tuple[float, str]:
    m = re.fullmatch(_NUM + r"\s*([A-Za-z/]*)", text.strip())
    if not m:
        raise ValueError(f"cannot parse {text!r}")
    return float(m.group(1)), m.group(2)


def parse_size_bytes(text: str | int | float) -> int:
    """``"64GiB"``, ``"1.5 TiB"``, ``"8"``, ``"1G"`` -> bytes (exact integer)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    value, unit = _split(str(text))
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit {unit!r} in {text!r} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")
    return int(round(value * _SIZE_UNITS[unit]))


def parse_bw_bytes_per_s(text: str) -> int:
    """``"1.8 TB/s"`` -> 1_800_000_000_000."""
    value, unit = _split(text)
    if unit not in _BW_UNITS:
        raise ValueError(f"unknown bandwidth unit {unit!r} in {text!r} (use B/s, KB/s, MB/s, GB/s, TB/s)")
    return int(round(value * _BW_UNITS[unit]))


def parse_time_ns(text: str | int) -> int:
    """``"5ms"``, ``"1 us"``, ``"250ns"`` -> integer nanoseconds."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    value, unit = _split(str(text))
    if unit not in _TIME_UNITS:
        raise ValueError(f"unknown time unit {unit!r} in {text!r} (use ns, us, ms, s)")
    return int(round(value * _TIME_UNITS[unit]))


def fmt_bytes(size_bytes: int) -> str:
    """Human-readable binary size, for tables."""
    for name, unit in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(size_bytes) >= unit:
            return f"{size_bytes / unit:.4g} {name}"
    return f"{size_bytes} B"


def fmt_ns(duration_ns: int | float) -> str:
    """Human-readable duration, for tables."""
    if abs(duration_ns) >= NS_PER_S:
        return f"{duration_ns / NS_PER_S:.4g} s"
    if abs(duration_ns) >= NS_PER_MS:
        return f"{duration_ns / NS_PER_MS:.4g} ms"
    if abs(duration_ns) >= NS_PER_US:
        return f"{duration_ns / NS_PER_US:.4g} us"
    return f"{int(duration_ns)} ns"


def ceil_div(a: int, b: int) -> int:
    """Integer ceiling division."""
    return -(-a // b)


def is_close_rel(a: float, b: float, rel: float) -> bool:
    """Relative comparison helper for reporting (never for timing)."""
    return math.isclose(a, b, rel_tol=rel)
