"""TVM RPC: measure on a board, one server (`--rpc host:port`) or a tracker's pool (`--tracker
host:port --key K`). The same connection settings serve the sweep's measurements and
MetaSchedule's RPCRunner, so tuning candidates also run on the board.

Each point opens its own session with a timeout on the server side: a board that drops or
hangs costs only that point, which is recorded as failed and measured again on the next run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass

import numpy as np

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

    def check(self, timeout_s: float = 60.0) -> None:
        """Fail early, before any compiling, when nothing answers (a pool: when no board serves its
        key; a board that is there but hangs is found out by its first point)."""
        if self.key:
            if not self.boards():
                raise AdvisorError(f"cannot reach {self.description}: no board with key {self.key!r} is registered")
            return
        failure: list[BaseException] = []
        connecting = threading.Thread(target=lambda: _collect(self.connect, failure), daemon=True)
        connecting.start()
        connecting.join(timeout_s)
        if connecting.is_alive():
            raise AdvisorError(f"cannot reach {self.description}: no answer within {timeout_s:g} s (a stopped server?)")
        if failure:
            raise failure[0]

    def boards(self) -> int:
        """How many boards serve this pool's key (1 for a single server)."""
        if not self.key:
            return 1
        from tvm import rpc

        try:
            summary = rpc.connect_tracker(self.host, self.port).summary()
        except Exception as error:
            raise AdvisorError(f"cannot reach {self.description}: {one_line(error, 300)}") from None
        return sum(1 for s in summary["server_info"] if s.get("key") == f"server:{self.key}")

    def measure(self, executable, inputs: list, reference, tolerance: float, policy: TimingPolicy,
                kind: str) -> dict:
        """Upload one compiled variant, check its output and time it on the board, from a child
        process: a board that hangs (a stopped server never answers) costs only this point, which
        fails with the reason after the session's timeout."""
        with tempfile.TemporaryDirectory() as scratch:
            library, arrays = os.path.join(scratch, "variant.so"), os.path.join(scratch, "inputs.npz")
            executable.export_library(library)
            np.savez(arrays, reference=reference, **{f"a{i}": array for i, array in enumerate(inputs)})
            job = {"remote": asdict(self), "library": library, "arrays": arrays, "count": len(inputs),
                   "tolerance": tolerance, "policy": asdict(policy), "kind": kind}
            env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}  # the client needs TVM's runtime alone
            try:
                done = subprocess.run([sys.executable, "-m", "advisor.board.rpc", json.dumps(job)], env=env,
                                      capture_output=True, text=True, timeout=self.session_timeout_s + 10)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"hung: {self.description} gave no result within "
                                   f"{self.session_timeout_s + 10:g} s") from None
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise RuntimeError(f"the measuring process crashed (exit status {done.returncode}): {tail}")
        result = json.loads(lines[-1])
        if "error" in result:
            raise RuntimeError(result["error"])
        return result

    def measure_here(self, library: str, inputs: list, reference, tolerance: float, policy: TimingPolicy,
                     kind: str) -> dict:
        """Upload, check and time a variant's exported library on the board, in this process."""
        import tvm
        from tvm.runtime.vm import VirtualMachine

        session = self.connect()
        session.upload(library)
        module = session.load_module(os.path.basename(library))
        device = device_for(kind, 0, session)
        vm = VirtualMachine(module, device)
        args = [tvm.runtime.tensor(array, device) for array in inputs]
        result = check_and_time(vm, device, args, reference, tolerance, policy)
        return {**result, "device": f"{kind} over {self.description}"}

    def tuning_runner(self, workers: int = 1):
        """MetaSchedule's RPCRunner on the same board or pool (`workers` candidates at once)."""
        from tvm.s_tir import meta_schedule as ms

        config = ms.runner.RPCConfig(tracker_host=self.host, tracker_port=self.port,
                                     tracker_key=self.key or "direct", session_priority=self.priority,
                                     session_timeout_sec=int(self.session_timeout_s))
        evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20, enable_cpu_cache_flush=False)
        return ms.runner.RPCRunner(config, evaluator, f_create_session=None if self.key else connect_direct,
                                   max_workers=workers)


def connect_direct(config):
    """RPCRunner's session factory for a single server: the config's tracker fields hold its address."""
    from tvm import rpc

    return rpc.connect(config.tracker_host, config.tracker_port, session_timeout=config.session_timeout_sec)


def _collect(call, failures: list) -> None:
    try:
        call()
    except BaseException as error:  # handed to the waiting thread
        failures.append(error)


def _measure_job(job: dict) -> dict:
    """A child's measurement (Remote.measure): a row's timing columns, or {"error": ...}."""
    remote = Remote(**job["remote"])
    try:
        arrays = np.load(job["arrays"])
        inputs = [arrays[f"a{i}"] for i in range(job["count"])]
        return remote.measure_here(job["library"], inputs, arrays["reference"], job["tolerance"],
                                   TimingPolicy(**job["policy"]), job["kind"])
    except (AdvisorError, ValueError) as error:  # an unreachable board, a wrong output
        return {"error": one_line(error)}
    except Exception as error:  # the session broke: the board died or dropped it
        return {"error": f"lost the board ({remote.description}) during the point: {one_line(error)}"}


if __name__ == "__main__":
    from advisor.board.runtime import runtime_only_environment

    runtime_only_environment()
    print(json.dumps(_measure_job(json.loads(sys.argv[1]))))
