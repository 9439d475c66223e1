"""`sn40l-emu` commands. Thin: parse, call one function, print or write.

Errors a user can cause (bad profile, bad --set, bad scenario, a bad option
value, an output path that cannot be written) print one line naming the field
and exit with status 2, without a traceback. ``OSError`` and a closed pipe
(``sn40l-emu status | head``) end the command cleanly too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence

from sn40l_emu.errors import ConfigError, EmuError
from sn40l_emu.experiments.options import profile_args

DESCRIPTION = """\
Emulate a SambaNova SN40L node (eight sockets with SRAM, HBM and DDR, joined by
peer-to-peer links) and DGX A100 / H100 baselines, and run the experiments of
the SN40L paper (Prabhakar et al., MICRO 2024) on it: Composition-of-Experts
serving (coe, capacity, coe-serve), tensor-parallel scaling (tp-scaling),
collective benchmarks (allreduce-bench) and fault injection (inject).

Each experiment writes a run directory (runs/<command>-<UTC time>-<hash>/, or
--out) with JSON, CSV, plots, a trace, the resolved configuration and a
summary; `sn40l-emu runs` lists them and `sn40l-emu run FILE.yaml` runs an
experiment file (a grid of options). Experiments run on a private local Ray
by default (--backend local: in-process), or on a node started with `up`.
Every command that builds a node takes --profile and --set K=V."""

EPILOG = """\
examples:
  sn40l-emu coe --experts 10,50,150 --batch 8 --tokens 20
  sn40l-emu tp-scaling --profile dgx-h100 --tp 1,2,4,8 --backend local
  sn40l-emu run experiments/table5_coe_sweep.yaml
  sn40l-emu runs
Run `sn40l-emu COMMAND --help` for a command's options and their defaults."""

Handler = Callable[[argparse.Namespace], int]


def cmd_profile_list(args: argparse.Namespace) -> int:
    from sn40l_emu.config import load_profile, shipped_profiles

    for name in shipped_profiles():
        print(f"{name:10s}  {load_profile(name).description}")
    return 0


def cmd_profile_show(args: argparse.Namespace) -> int:
    from sn40l_emu.config import load_profile
    from sn40l_emu.report import profile_table

    prof = load_profile(args.name, args.overrides)
    if args.json:
        print(json.dumps(prof.to_json(), indent=2))
    else:
        print(profile_table(prof))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from sn40l_emu.cluster import named

    if args.sockets is not None:
        try:
            n = int(args.sockets)
        except ValueError:
            raise ConfigError("--sockets", args.sockets, "a positive integer (8 = one node, 16 = two)") from None
        if not 1 <= n <= 1024:
            raise ConfigError("--sockets", args.sockets, "a positive integer (8 = one node, 16 = two)")
        args.sockets = n

    st = named.up(args.name, address=args.address or "", profile=args.profile,
                  overrides=args.overrides, bind_address=args.bind, n_sockets=args.sockets,
                  placement=args.placement, allow_open=args.allow_open)
    started = f"started Ray head pid {st.head_pid}" if st.head_pid else "joined the existing cluster"
    print(f"node {st.name!r} is up: {st.n_sockets} sockets on {st.address} ({started})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from sn40l_emu.cluster import named
    from sn40l_emu.units import fmt_bytes

    st = named.status(args.name)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"node {st['name']!r} at {st['address']} (profile {st['profile']})")
    print(f"{'socket':>6}  {'ray node':14s} {'clock':>14s}  " + "  ".join(f"{t:>22s}" for t in ("sram", "hbm", "ddr")))
    for s in st["sockets"]:
        tiers = "  ".join(
            f"{fmt_bytes(s['tiers'][t]['used_bytes']) + ' / ' + fmt_bytes(s['tiers'][t]['capacity_bytes']):>22s}"
            for t in ("sram", "hbm", "ddr"))
        print(f"{s['index']:>6}  {s['ray_node'][:12]:14s} {s['clock_ns']:>11d} ns  {tiers}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from sn40l_emu.cluster import named

    st = named.down(args.name)
    print(f"node {st.name!r} is down" + (f"; stopped Ray head pid {st.head_pid}" if st.head_pid else ""))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sn40l_emu.experiments.rundir import list_runs, runs_root
    from sn40l_emu.report import table

    root = Path(args.dir) if args.dir else runs_root()
    runs = list_runs(root)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    if not runs:
        print(f"no run directories in {root}/")
        return 0
    print(table([{**r, "rows": "" if r["rows"] is None else r["rows"]} for r in runs],
                [("run", "run"), ("command", "command"), ("created_utc", "created (UTC)"),
                 ("status", "status"), ("rows", "rows")]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sn40l-emu", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prof = sub.add_parser("profile", help="list or show node profiles")
    psub = prof.add_subparsers(dest="profile_cmd", required=True)
    pl = psub.add_parser("list", help="list shipped profiles")
    pl.set_defaults(func=cmd_profile_list)
    ps = psub.add_parser("show", help="show a resolved profile with units and sources")
    ps.add_argument("name", help="shipped profile name or path to a YAML profile")
    ps.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V",
                    help="override one profile field, e.g. --set p2p.link_bw_gbps=25 (repeatable; default: none)")
    ps.add_argument("--json", action="store_true",
                    help="JSON in base units (B, B/s, FLOP/s, ns) (default: a table with units and sources)")
    ps.set_defaults(func=cmd_profile_show)

    up = sub.add_parser("up", help="create a detached, named node that outlives the command")
    up.add_argument("--address", help="join this Ray cluster (auto or host:port) (default: start a local head)")
    up.add_argument("--name", default="sn40l", help="name of the node, for status, down and experiments "
                                                    "(SN40L_EMU_NODE) (default: sn40l)")
    up.add_argument("--bind", default="127.0.0.1", help="address a new head binds to (default 127.0.0.1)")
    up.add_argument("--allow-open", action="store_true",
                    help="allow --bind 0.0.0.0 (all interfaces): an open Ray cluster runs any code it is sent "
                         "(default: off)")
    up.add_argument("--sockets", default=None,
                    help="sockets of the emulated system, >= 1 (default: the profile's 8; 16 = two nodes, TP16)")
    up.add_argument("--placement", default="pack", metavar="pack|spread|map:FILE.json",
                    help="where the sockets go on the Ray nodes; map:FILE.json names a Ray node id "
                         'or machine IP per socket, e.g. {"0-7": "10.0.0.1", "8-15": "10.0.0.2"} '
                         "(default: pack)")
    profile_args(up)
    up.set_defaults(func=cmd_up)

    st = sub.add_parser("status", help="show each socket's Ray node, clock and memory use")
    st.add_argument("--name", default="sn40l", help="node name given to `up` (default: sn40l)")
    st.add_argument("--json", action="store_true", help="print JSON (default: a table)")
    st.set_defaults(func=cmd_status)

    dn = sub.add_parser("down", help="remove a named node and stop what `up` started")
    dn.add_argument("--name", default="sn40l", help="node name given to `up` (default: sn40l)")
    dn.set_defaults(func=cmd_down)

    rs = sub.add_parser("runs", help="list the run directories (runs/ or $SN40L_EMU_RUNS_DIR)")
    rs.add_argument("--dir", default="", help="directory holding the runs (default: runs/ or $SN40L_EMU_RUNS_DIR)")
    rs.add_argument("--json", action="store_true", help="print JSON (default: a table)")
    rs.set_defaults(func=cmd_runs)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


# Each module defines ``register(subparsers)`` adding its command(s); import stays cheap
# (modules import Ray and numpy-heavy code inside their handlers only).
COMMAND_MODULES: tuple[str, ...] = (
    "sn40l_emu.experiments.tp_scaling",
    "sn40l_emu.experiments.coe_sweep",
    "sn40l_emu.experiments.coe_serve",
    "sn40l_emu.experiments.coe_fleet",
    "sn40l_emu.experiments.inject_cmd",
    "sn40l_emu.experiments.allreduce_bench",
    "sn40l_emu.experiments.coll_bench",
    "sn40l_emu.experiments.run_file",
    "sn40l_emu.experiments.validate",
    "sn40l_emu.experiments.calibrate",
)


def main(argv: Sequence[str] | None = None) -> int:
    from sn40l_emu.cluster.bringup import check_bind, prepare_env

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    bind = getattr(args, "bind", "127.0.0.1")
    try:
        check_bind(bind, getattr(args, "allow_open", False))
    except ConfigError as exc:
        print(f"sn40l-emu: error: {exc}", file=sys.stderr)
        return 2
    if bind not in ("127.0.0.1", "localhost"):
        print(f"warning: binding to {bind}: an open Ray cluster runs any code it is sent",
              file=sys.stderr)
    prepare_env(bind)
    from sn40l_emu.experiments.rundir import mark_unfinished_failed

    try:
        code: int = args.func(args)
        sys.stdout.flush()
        return code
    except ConfigError as exc:
        mark_unfinished_failed(str(exc))
        print(f"sn40l-emu: error: {exc}", file=sys.stderr)
        return 2
    except EmuError as exc:
        mark_unfinished_failed(str(exc))
        print(f"sn40l-emu: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _closed_pipe()
    except OSError as exc:
        mark_unfinished_failed(str(exc))
        where = f": {exc.filename}" if exc.filename else ""
        print(f"sn40l-emu: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except BaseException as exc:
        mark_unfinished_failed(f"{type(exc).__name__}: {exc}")
        raise


def _closed_pipe() -> int:
    """The reader went away (``| head``): stop quietly, as a SIGPIPE'd process would (status 141)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141


if __name__ == "__main__":
    raise SystemExit(main())
