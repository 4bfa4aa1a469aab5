"""TVM RPC: measure on a board, one server (`--rpc host:port`) or a tracker's pool (`--tracker
host:port --key K`). The same connection settings serve the sweep's measurements and
MetaSchedule's RPCRunner, so tuning candidates also run on the board.

Each point opens its own session with a timeout on the server side: a board that drops or
hangs costs only that point, which is recorded as failed and measured again on the next run.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from advisor.errors import AdvisorError, one_line
from advisor.board.runtime import check_and_time, device_for
from advisor.board.timing import TimingPolicy


def parse_address(text: str, option: str) -> tuple[str, int]:
    host, _, port = (text or "").strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise AdvisorError(f"{option} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


@dataclass(frozen=True)
class Remote:
    """Where to measure: a server, or a tracker plus the key of a board pool."""

    host: str
    port: int
    key: str | None = None  # set: (host, port) is a tracker
    session_timeout_s: float = 600.0
    priority: int = 1

    @classmethod
    def from_options(cls, rpc: str | None, tracker: str | None, key: str | None,
                     session_timeout_s: float = 600.0) -> "Remote | None":
        if rpc and tracker:
            raise AdvisorError("give --rpc (one board) or --tracker with --key (a pool), not both")
        if tracker and not key:
            raise AdvisorError("--tracker needs --key: the device key the boards registered with")
        if key and not tracker:
            raise AdvisorError("--key needs --tracker HOST:PORT")
        if rpc:
            return cls(*parse_address(rpc, "--rpc"), session_timeout_s=session_timeout_s)
        if tracker:
            return cls(*parse_address(tracker, "--tracker"), key=key, session_timeout_s=session_timeout_s)
        return None

    @property
    def description(self) -> str:
        return f"tracker {self.host}:{self.port} key {self.key}" if self.key else f"rpc {self.host}:{self.port}"

    def connect(self):
        """An RPC session; AdvisorError if the board or tracker cannot be reached."""
        from tvm import rpc

        try:
            if self.key:
                tracker = rpc.connect_tracker(self.host, self.port)
                # a request for a key no board serves waits for ever: fail instead, the point is retried later
                boards = [s for s in tracker.summary()["server_info"] if s.get("key") == f"server:{self.key}"]
                if not boards:
                    raise RuntimeError(f"no board with key {self.key!r} is registered")
                return tracker.request(self.key, priority=self.priority, session_timeout=self.session_timeout_s)
            return rpc.connect(self.host, self.port, session_timeout=self.session_timeout_s)
        except Exception as error:
            raise AdvisorError(f"cannot reach {self.description}: {one_line(error, 300)}") from None

    def check(self) -> None:
        """Fail early, before any compiling, when nothing answers."""
        self.connect()

    def measure(self, executable, inputs: list, reference, tolerance: float, policy: TimingPolicy,
                kind: str) -> dict:
        """Upload one compiled variant, check its output and time it on the board."""
        import tvm
        from tvm.runtime.vm import VirtualMachine

        session = self.connect()
        with tempfile.TemporaryDirectory() as scratch:
            path = os.path.join(scratch, "variant.so")
            executable.export_library(path)
            session.upload(path)
        library = session.load_module("variant.so")
        device = device_for(kind, 0, session)
        vm = VirtualMachine(library, device)
        args = [tvm.runtime.tensor(array, device) for array in inputs]
        result = check_and_time(vm, device, args, reference, tolerance, policy)
        return {**result, "device": f"{kind} over {self.description}"}

    def tuning_runner(self):
        """MetaSchedule's RPCRunner on the same board or pool."""
        from tvm.s_tir import meta_schedule as ms

        config = ms.runner.RPCConfig(tracker_host=self.host, tracker_port=self.port,
                                     tracker_key=self.key or "direct", session_priority=self.priority,
                                     session_timeout_sec=int(self.session_timeout_s))
        evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20, enable_cpu_cache_flush=False)
        return ms.runner.RPCRunner(config, evaluator, f_create_session=None if self.key else connect_direct)


def connect_direct(config):
    """RPCRunner's session factory for a single server: the config's tracker fields hold its address."""
    from tvm import rpc

    return rpc.connect(config.tracker_host, config.tracker_port, session_timeout=config.session_timeout_sec)
