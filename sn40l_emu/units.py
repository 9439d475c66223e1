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
from decimal import Decimal, InvalidOperation, localcontext

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

# Sanity ceilings on any parsed quantity, in base units. They are far above any
# real machine (a socket with 1 EiB of memory, 1 EB/s of bandwidth, 1 EFLOP/s)
# and exist only so that a typo such as ``1e400 GiB`` is refused with a clear
# error instead of overflowing later. Virtual time stops at 1e15 ns (11.6 days).
MAX_SIZE_BYTES = 2**60
MAX_BW_BYTES_PER_S = 10**18
MAX_FLOPS_PER_S = 10**18
MAX_TIME_NS = 10**15
MAX_NUMBER_CHARS = 64  # a quantity written with more characters is a mistake

_SIZE_UNITS = {
    "": 1, "b": 1, "B": 1,
    "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB,
    "KB": KB, "MB": MB, "GB": GB, "TB": TB,
    "K": KiB, "M": MiB, "G": GiB, "T": TiB,  # nccl-tests style -b 8 -e 1G
    "k": KiB, "m": MiB, "g": GiB, "t": TiB,
}
_BW_UNITS = {"B/s": 1, "KB/s": KB, "MB/s": MB, "GB/s": GB, "TB/s": TB}
_TIME_UNITS = {"ns": 1, "us": NS_PER_US, "ms": NS_PER_MS, "s": NS_PER_S}
_FLOPS_UNITS = {"FLOP/s": 1, "GFLOP/s": 10**9, "TFLOP/s": TFLOPS, "PFLOP/s": 10**15}
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


class RoundsToZero(ValueError):
    """A positive quantity too small to be represented in base units (it would become 0)."""


def split_quantity(text: str) -> tuple[Decimal, str]:
    """``"1.5 TiB"`` -> (Decimal("1.5"), "TiB"): the number kept exact, the unit as written."""
    text = str(text).strip()
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a quantity of at most {MAX_NUMBER_CHARS} characters, got {len(text)}")
    m = re.fullmatch(_NUM + r"\s*([A-Za-z/]*)", text)
    if not m:
        raise ValueError(f"cannot parse {text[:MAX_NUMBER_CHARS]!r}")
    return Decimal(m.group(1)), m.group(2)


def to_base_int(value: Decimal | int | float, scale: int, max_base: int, what: str = "value") -> int:
    """``value * scale`` rounded half-even to an integer, exactly; refuses non-finite,
    negative and out-of-range results and positive values that would round to 0.

    Exact decimal arithmetic (not float) so ``"1.8 TB/s"`` is 1_800_000_000_000
    on every machine, and ``1e400`` is a clear ``ValueError`` rather than an
    ``OverflowError`` from ``int(inf)``.
    """
    if isinstance(value, bool):
        raise ValueError(f"{what}: a number, got a boolean")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what}: a finite number, got {value}")
    dec = value if isinstance(value, Decimal) else Decimal(value)
    if not dec.is_finite():
        raise ValueError(f"{what}: a finite number")
    if dec < 0:
        raise ValueError(f"{what}: a number >= 0")
    if dec != 0 and dec.adjusted() > 40:  # far beyond every ceiling; skip the big product
        raise ValueError(f"{what}: at most {max_base} in base units")
    with localcontext() as ctx:
        ctx.prec = 80
        try:
            base = (dec * scale).to_integral_value()
        except InvalidOperation:
            raise ValueError(f"{what}: a plain number") from None
    out = int(base)
    if out > max_base:
        raise ValueError(f"{what}: at most {max_base} in base units")
    if out == 0 and dec > 0:
        raise RoundsToZero("this value rounds to 0 in base units (B, B/s, FLOP/s or ns)")
    return out


def _parse(text: str | int | float, table: dict[str, int], max_base: int, kind: str,
           default_scale: int = 1) -> int:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return to_base_int(text, default_scale, max_base, kind)
    value, unit = split_quantity(str(text))
    if unit not in table:
        names = ", ".join(u for u in table if u)
        raise ValueError(f"unknown {kind} unit {unit[:16]!r} (use {names})")
    return to_base_int(value, table[unit] if unit else default_scale, max_base, kind)


def parse_size_bytes(text: str | int | float) -> int:
    """``"64GiB"``, ``"1.5 TiB"``, ``"8"``, ``"1G"`` -> bytes (exact integer, <= 1 EiB)."""
    return _parse(text, _SIZE_UNITS, MAX_SIZE_BYTES, "size")


def parse_bw_bytes_per_s(text: str) -> int:
    """``"1.8 TB/s"`` -> 1_800_000_000_000 (<= 1 EB/s)."""
    return _parse(text, _BW_UNITS, MAX_BW_BYTES_PER_S, "bandwidth")


def parse_flops_per_s(text: str) -> int:
    """``"638 TFLOP/s"`` -> 638_000_000_000_000 (<= 1 EFLOP/s)."""
    return _parse(text, _FLOPS_UNITS, MAX_FLOPS_PER_S, "compute rate")


def parse_time_ns(text: str | int) -> int:
    """``"5ms"``, ``"1 us"``, ``"250ns"`` -> integer nanoseconds (<= 1e15 ns); a bare integer is ns."""
    if isinstance(text, float):
        raise ValueError("time: an integer number of ns, or a string with a unit like '5ms'")
    return _parse(text, _TIME_UNITS, MAX_TIME_NS, "time")


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
