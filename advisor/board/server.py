"""Start the board's TVM RPC server on an address chosen on purpose.

TVM's RPC server runs whatever module a client uploads and asks nobody who they are: whoever
reaches its port can run code on the board as the server's user. This launcher therefore binds
to loopback unless told otherwise (reach it through an SSH tunnel, `ssh -L 9090:127.0.0.1:9090
board`), and refuses all interfaces (0.0.0.0, ::) or a public address unless asked explicitly.
On a private network, bind to the board's private address and join a tracker there.

    python -m advisor.board.server                                   # 127.0.0.1:9090
    RPC_HOST=10.0.0.7 RPC_TRACKER=10.0.0.1:9190 RPC_KEY=board python -m advisor.board.server
    RPC_HOST=0.0.0.0 RPC_EXPOSE=1 python -m advisor.board.server     # e.g. inside a container
                                                                     # published on 127.0.0.1 only

Each option also reads an environment variable (RPC_HOST, RPC_PORT, RPC_TRACKER, RPC_KEY,
RPC_CUSTOM_ADDR, RPC_LOAD_LIBRARY, RPC_EXPOSE), so a container sets them with `-e`. The server
itself is TVM's (`python -m tvm.exec.rpc_server`), started in this process's place. Importing
this module imports neither TVM nor PyTorch.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9090


class RefusedAddress(ValueError):
    """An address the server would serve everybody on, without the explicit opt-in."""


def resolve(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses a host name or literal stands for."""
    try:
        return [ipaddress.ip_address(host.split("%", 1)[0])]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as error:
        raise ValueError(f"cannot resolve RPC host {host!r}: {error.strerror}") from None
    return sorted({ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos}, key=str)


def exposure(host: str) -> str:
    """Who can reach a server bound to `host`: 'loopback', 'private' or 'everyone'."""
    addresses = resolve(host)
    if any(a.is_unspecified or a.is_global for a in addresses):
        return "everyone"
    if all(a.is_loopback for a in addresses):
        return "loopback"
    return "private"


def check_host(host: str, expose: bool) -> str:
    """The exposure of `host`; RefusedAddress when it is everyone's and `expose` was not given."""
    reach = exposure(host)
    if reach == "everyone" and not expose:
        raise RefusedAddress(
            f"refusing to serve TVM RPC on {host}: every machine that reaches this port could run "
            "code here (the server has no authentication). Bind to 127.0.0.1 and use an SSH "
            "tunnel, or to a private address (RPC_HOST), or set RPC_EXPOSE=1 (--expose) when "
            "something else limits who connects (a container port published on 127.0.0.1, a firewall)")
    return reach


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m advisor.board.server",
                                description="TVM's RPC server, bound to loopback unless told otherwise.")
    p.add_argument("--host", default=env("RPC_HOST") or DEFAULT_HOST,
                   help="address to bind (RPC_HOST; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(env("RPC_PORT") or DEFAULT_PORT),
                   help="port to bind, exactly this one (RPC_PORT; default 9090)")
    p.add_argument("--tracker", default=env("RPC_TRACKER") or None,
                   help="join this tracker's pool, HOST:PORT (RPC_TRACKER)")
    p.add_argument("--key", default=env("RPC_KEY") or None,
                   help="the pool's key at the tracker (RPC_KEY; needs --tracker)")
    p.add_argument("--custom-addr", default=env("RPC_CUSTOM_ADDR") or None,
                   help="the address the tracker gives clients for this board (RPC_CUSTOM_ADDR)")
    p.add_argument("--load-library", default=env("RPC_LOAD_LIBRARY") or None,
                   help="extra libraries each session loads, ':'-separated, e.g. an OpenCL runtime (RPC_LOAD_LIBRARY)")
    p.add_argument("--expose", action="store_true", default=env("RPC_EXPOSE", "") not in ("", "0"),
                   help="allow 0.0.0.0, :: or a public address (RPC_EXPOSE=1)")
    p.add_argument("--dry-run", action="store_true", help="print the server's command line and exit")
    return p


def server_command(args: argparse.Namespace) -> list[str]:
    """TVM's server command line for checked options (ValueError / RefusedAddress otherwise)."""
    if not 0 < args.port < 65535:
        raise ValueError(f"RPC port {args.port} is out of range")
    if args.key and not args.tracker:
        # without a tracker a key makes the server turn away advisor's plain `--rpc host:port` clients
        raise ValueError("RPC_KEY (--key) needs RPC_TRACKER (--tracker HOST:PORT)")
    if args.tracker and not args.key:
        raise ValueError("RPC_TRACKER (--tracker) needs RPC_KEY (--key): the pool's name")
    check_host(args.host, args.expose)
    command = [sys.executable, "-m", "tvm.exec.rpc_server", "--host", args.host, "--port", str(args.port),
               "--port-end", str(args.port + 1)]
    if args.tracker:
        command += ["--tracker", args.tracker, "--key", args.key]
    if args.custom_addr:
        command += ["--custom-addr", args.custom_addr]
    if args.load_library:
        command += ["--load-library", args.load_library]
    return command


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        command = server_command(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    reach = exposure(args.host)
    where = {"loopback": f"loopback only: reach it through an SSH tunnel (ssh -L {args.port}:127.0.0.1:{args.port} board)",
             "private": "a private network: anyone on it can run code here",
             "everyone": "EXPOSED on purpose (--expose): anyone who reaches the port can run code here"}[reach]
    pool = f", in tracker {args.tracker}'s pool {args.key!r}" if args.tracker else ""
    print(f"advisor.board.server: TVM RPC on {args.host}:{args.port}{pool}; {where}", file=sys.stderr, flush=True)
    if args.dry_run:
        print(" ".join(command))
        return 0
    os.execv(sys.executable, command)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
