"""Which network endpoints a group of processes holds, read from Linux ``/proc``.

Used to check the safe-defaults promise: every Ray process the emulator (or a
test) starts listens and connects only on 127.0.0.1 or on addresses the user
named. For each process it maps the socket inodes in ``/proc/PID/fd`` to the
TCP/UDP tables of that process's own network namespace
(``/proc/PID/net/{tcp,tcp6,udp,udp6}``), so processes inside a namespace are
read correctly. Unix-domain sockets are not network endpoints and are ignored.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
    "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}


@dataclass(frozen=True)
class Endpoint:
    pid: int
    proto: str  # tcp | udp
    state: str
    local: str
    local_port: int
    remote: str
    remote_port: int

    @property
    def connected(self) -> bool:
        return self.remote_port != 0

    def __str__(self) -> str:
        return (f"pid {self.pid} {self.proto} {self.state} "
                f"{self.local}:{self.local_port} -> {self.remote}:{self.remote_port}")


def _addr(hex_addr: str) -> str:
    """Kernel hex (host byte order per 32-bit word) -> text; IPv4-mapped IPv6 -> IPv4."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(struct.pack("=I", w) for w in struct.unpack(">" + "I" * (len(raw) // 4), raw))
    if len(words) == 4:
        return socket.inet_ntop(socket.AF_INET, words)
    ip = ipaddress.IPv6Address(words)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped else str(ip)


def _table(pid: int, name: str) -> dict[str, tuple[str, str, int, str, int]]:
    """inode -> (state, local, lport, remote, rport) of one /proc/PID/net table."""
    out: dict[str, tuple[str, str, int, str, int]] = {}
    try:
        lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        f = line.split()
        if len(f) < 10:
            continue
        (la, lp), (ra, rp) = f[1].split(":"), f[2].split(":")
        out[f[9]] = (TCP_STATES.get(f[3], f[3]), _addr(la), int(lp, 16), _addr(ra), int(rp, 16))
    return out


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, session id) of a process."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(rest[1]), int(rest[3])


def session_of(pid: int) -> int | None:
    """The session id of a process (None when it is gone)."""
    st = _stat(pid)
    return None if st is None else st[1]


def process_tree(roots: Iterable[int], sessions: Iterable[int] = ()) -> set[int]:
    """The roots, all their descendants, and every process in the given session ids."""
    roots, sessions = set(roots), set(sessions)
    children: dict[int, list[int]] = {}
    members = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = _stat(int(d))
        if st is None:
            continue
        children.setdefault(st[0], []).append(int(d))
        if st[1] in sessions:
            members.add(int(d))
    out, todo = set(), list(roots | members)
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo.extend(children.get(p, []))
    return out


def running(pids: Iterable[int]) -> set[int]:
    """The pids that still run: neither gone nor zombies (dead, waiting for a parent to reap them)."""
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            out.add(pid)
    return out


def endpoints(pids: Iterable[int]) -> list[Endpoint]:
    """Every TCP/UDP socket the processes hold, read in each process's own network namespace."""
    out: list[Endpoint] = []
    tables: dict[str, dict[str, dict[str, tuple[str, str, int, str, int]]]] = {}
    for pid in sorted(set(pids)):
        inodes = _socket_inodes(pid)
        if not inodes:
            continue
        try:
            ns = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if ns not in tables:
            tables[ns] = {name: _table(pid, name) for name in ("tcp", "tcp6", "udp", "udp6")}
        for name, table in tables[ns].items():
            for inode in inodes & table.keys():
                state, la, lp, ra, rp = table[inode]
                proto = name.rstrip("6")
                if proto == "udp":
                    state = "CONNECTED" if rp else "BOUND"
                out.append(Endpoint(pid, proto, state, la, lp, ra, rp))
    return out


WILDCARDS = frozenset({"0.0.0.0", "::"})


def foreign(eps: Iterable[Endpoint], allowed: Iterable[str], *, wildcard_ok: bool = False) -> list[Endpoint]:
    """Endpoints bound to or connected to an address outside ``allowed``.

    A socket bound to all interfaces (0.0.0.0 / ::) counts as outside unless
    ``wildcard_ok`` -- right only inside a network namespace whose interfaces
    carry nothing but allowed addresses (see :func:`namespace_addresses`).
    """
    ok = set(allowed)
    bad = []
    for e in eps:
        local_ok = e.local in ok or (wildcard_ok and e.local in WILDCARDS)
        if not local_ok or (e.connected and e.remote not in ok):
            bad.append(e)
    return bad


def namespace_addresses(pid: int) -> set[str]:
    """Every address configured on the interfaces of ``pid``'s network namespace (from /proc)."""
    out: set[str] = set()
    try:
        for line in Path(f"/proc/{pid}/net/if_inet6").read_text().splitlines():
            out.add(str(ipaddress.IPv6Address(bytes.fromhex(line.split()[0]))))
    except OSError:
        pass
    try:
        fib = Path(f"/proc/{pid}/net/fib_trie").read_text().splitlines()
    except OSError:
        return out
    for i, line in enumerate(fib):
        if "/32 host LOCAL" in line and i > 0:
            out.add(fib[i - 1].split()[-1])
    return out
