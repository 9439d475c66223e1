"""Command-line options that several commands share, declared once."""

from __future__ import annotations

import argparse


def profile_args(p: argparse.ArgumentParser, default: str = "sn40l") -> None:
    """``--profile`` and ``--set``: every command that involves a node takes both."""
    p.add_argument("--profile", default=default, help="shipped profile name or path to a YAML profile")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V",
                   help="override one profile field, e.g. --set p2p.link_bw_gbps=25 (repeatable)")
