"""Spin one CPU core until killed: the load for ``make test-under-load``.

It only computes; it opens no file or socket and starts nothing, so stopping
it by its pid (SIGTERM) leaves nothing behind.
"""

from __future__ import annotations

import signal
import sys


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2_147_483_648


if __name__ == "__main__":
    raise SystemExit(main())
