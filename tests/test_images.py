"""The images, built with buildah and run: the board image's RPC server serves a sweep (with
tuning) from this machine and listens on loopback only, a bundle compiled in the host image is
timed in the board image with TVM's runtime alone.

Building is scripts/build-images.sh (layer-cached: seconds once built; from nothing, with the
base image made by debootstrap, a few minutes). Containers run with `buildah run --isolation
chroot`, on this machine's network, so a server inside is reachable on 127.0.0.1.
"""

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from advisor.board import server
from tests.conftest import REPO, run_advisor

BUILDAH = shutil.which("buildah")
needs_buildah = pytest.mark.skipif(BUILDAH is None, reason="buildah is not installed (bash scripts/system-packages.sh)")

BOARD, HOST = "localhost/advisor-board:latest", "localhost/advisor-host:latest"
BOARD_USER = 10001  # the images' non-root user (docker/Dockerfile.*)
TINY = ["--model", "tinynet", "--layer", "conv2", "--threads", "1", "--repeats", "3"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(path: Path, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared in {path}:\n{path.read_text()}")


def buildah(*args, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([BUILDAH, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"buildah {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def image_command(image: str) -> list[str]:
    """The image's CMD: what `docker run IMAGE` would start."""
    config = json.loads(buildah("inspect", "--type", "image", image).stdout)["OCIv1"]["config"]
    return config["Cmd"]


class Container:
    """A working container of an image (removed on close); `run` runs a command in it."""

    def __init__(self, image: str):
        self.name = f"advisor-test-{uuid.uuid4().hex[:10]}"
        buildah("from", "--pull=never", "--name", self.name, image)

    def argv(self, command, env=(), volumes=(), user=None) -> list[str]:
        options = [f"--env={e}" for e in env] + [f"--volume={v}" for v in volumes]
        options += [f"--user={user}"] if user else []
        return [BUILDAH, "run", "--isolation", "chroot", *options, self.name, "--", *map(str, command)]

    def run(self, *command, env=(), volumes=(), user=None, timeout: float = 300) -> subprocess.CompletedProcess:
        process = subprocess.Popen(self.argv(command, env, volumes, user), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(process)
            raise
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def close(self) -> None:
        buildah("rm", self.name, check=False)


def kill_group(process: subprocess.Popen) -> None:
    """End buildah run and what it started (its own process group, by its id)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def images():
    """Both images, built or (cached) rebuilt by scripts/build-images.sh."""
    started = time.monotonic()
    result = subprocess.run(["bash", str(REPO / "scripts" / "build-images.sh"), "board", "host"],
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, f"scripts/build-images.sh failed:\n{result.stdout}\n{result.stderr}"
    print(f"images ready in {time.monotonic() - started:.0f} s:\n{result.stdout}")
    return BOARD, HOST


@pytest.fixture
def container(images):
    made = []

    def make(image: str) -> Container:
        made.append(Container(image))
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.fixture(scope="module")
def board_server(images, tmp_path_factory):
    """The board image's own command (its RPC server, defaults untouched but the port)."""
    port, log_path = free_port(), tmp_path_factory.mktemp("board") / "server.log"
    board = Container(BOARD)
    with open(log_path, "w") as log:
        server = subprocess.Popen(board.argv(image_command(BOARD), env=[f"RPC_PORT={port}"]),
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(log_path, "bind to")
        yield port, log_path
    finally:
        kill_group(server)
        board.close()


def non_loopback_ipv4() -> str | None:
    """One of this machine's own addresses that is not loopback."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                             text=True, timeout=10).stdout
        for line in out.splitlines():
            return line.split()[3].split("/")[0]
    except (OSError, IndexError):
        pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            if not info[4][0].startswith("127."):
                return info[4][0]
    except OSError:
        pass
    return None


@needs_buildah
def test_board_server_serves_loopback_only_by_default(board_server, container):
    port, log = board_server
    assert f"bind to 127.0.0.1:{port}" in log.read_text()
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # loopback: accepted (the server drops a client that sends nothing and serves on)
    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try the server's port on")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, port), timeout=5).close()

    # all interfaces only when asked for explicitly
    board = container(BOARD)
    refused = board.run("python", "-m", "advisor.board.server", env=["RPC_HOST=0.0.0.0"], timeout=60)
    assert refused.returncode == 2 and "refusing to serve TVM RPC on 0.0.0.0" in refused.stderr
    asked = board.run("python", "-m", "advisor.board.server", "--dry-run",
                      env=["RPC_HOST=0.0.0.0", "RPC_EXPOSE=1"], timeout=60)
    assert asked.returncode == 0 and "--host 0.0.0.0" in asked.stdout, asked.stderr
    # and the board image has no PyTorch
    assert board.run("python", "-c", "import torch", timeout=60).returncode != 0


@needs_buildah
def test_sweep_with_tuning_through_the_board_image(board_server, tmp_path):
    port, log = board_server
    result = run_advisor("sweep", *TINY, "--channels", "8", "--trials", "2", "--cost-model", "random",
                         "--rpc", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "advisor.db") as connection:
        connection.row_factory = sqlite3.Row
        (row,) = [dict(r) for r in connection.execute("SELECT * FROM points")]
    assert row["status"] == "ok" and row["median_ms"] > 0 and row["max_abs_err"] <= 1e-3
    assert row["device"] == f"llvm over rpc 127.0.0.1:{port}"
    assert row["trials_run"] == 2
    # the tuner's 2 candidates (linked on the board) and the final variant ran in the container
    assert log.read_text().count("load_module") >= 3
    records = (tmp_path / "tuning_logs" / "llvm" / "database_tuning_record.json").read_text().splitlines()
    run_seconds = [json.loads(line)[1][1][0] for line in records]
    assert len(run_seconds) == 2 and all(0 < s < 1 for s in run_seconds)  # real times, not failures


@needs_buildah
def test_bundle_from_the_host_image_measured_in_the_board_image(container, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    if os.geteuid() == 0:
        os.chown(work, BOARD_USER, BOARD_USER)
    else:
        work.chmod(0o777)
    host = container(HOST)
    version = host.run("python", "-c", "import torch; print(torch.__version__)", timeout=120)
    assert version.stdout.strip() == "2.13.0+cpu", version.stderr  # the CPU build, not PyPI's CUDA one
    made = host.run("advisor", "bundle", "/work/bundle", *TINY, "--channels", "8,16", "--trials", "0",
                    volumes=[f"{work}:/work"], timeout=600)
    assert made.returncode == 0, made.stderr
    bundle = work / "bundle"

    board = container(BOARD)
    measured = board.run("python", "-m", "advisor.board.measure", "/bundles/b",
                         volumes=[f"{bundle}:/bundles/b"], timeout=300)
    assert measured.returncode == 0, measured.stderr
    results = json.loads((bundle / "results.json").read_text())
    assert results["compiler_loaded"] is False  # TVM's runtime alone ran them
    assert [r["status"] for r in results["results"]] == ["ok", "ok"]
    assert all(r["median_ms"] > 0 for r in results["results"])

    imported = run_advisor("import", bundle, cwd=tmp_path)  # back on the host: the rows it reads
    assert imported.returncode == 0 and "imported 2 measured" in imported.stderr, imported.stderr


def opencl_runtime() -> str:
    """TVM's OpenCL sidecar for the board-opencl image: $OPENCL_RUNTIME, or the one in
    $ADVISOR_TVM_RUNTIME_PATH; skip when there is none (TVM's wheel has none, docs/boards.md)."""
    if os.environ.get("OPENCL_RUNTIME"):
        return os.environ["OPENCL_RUNTIME"]
    for folder in filter(None, os.environ.get("ADVISOR_TVM_RUNTIME_PATH", "").split(os.pathsep)):
        if (Path(folder) / "libtvm_runtime_opencl.so").is_file():
            return str(Path(folder) / "libtvm_runtime_opencl.so")
    pytest.skip("no TVM OpenCL runtime: set OPENCL_RUNTIME or ADVISOR_TVM_RUNTIME_PATH (TVM's wheel has none)")


@needs_buildah
def test_opencl_board_image_measures_a_bundle_on_an_icd(images, container, tmp_path):
    """The OpenCL board image carries TVM's OpenCL runtime and the ICD loader, no driver: PoCL,
    installed into a throwaway container, stands in for the vendor ICD a board mounts."""
    library = opencl_runtime()
    built = subprocess.run(["bash", str(REPO / "scripts" / "build-images.sh"), "board-opencl"],
                           env={**os.environ, "OPENCL_RUNTIME": library}, capture_output=True, text=True,
                           timeout=1800)
    assert built.returncode == 0, built.stdout + built.stderr
    made = run_advisor("bundle", "b", "--model", "tinynet", "--layer", "conv4", "--target", "opencl",
                       "--threads", "1", "--repeats", "3", "--channels", "8,16", "--trials", "0", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    bundle = tmp_path / "b"
    if os.geteuid() == 0:
        for path in [bundle, *bundle.iterdir()]:
            os.chown(path, BOARD_USER, BOARD_USER)
    else:
        bundle.chmod(0o777)

    board = container("localhost/advisor-board-opencl:latest")
    no_driver = board.run("python", "-c", "import tvm; print(tvm.opencl(0).exist)", timeout=120)
    assert no_driver.stdout.strip() == "False", no_driver.stderr  # the runtime loads, no device without an ICD
    icd = board.run("sh", "-c", "apt-get update -q && apt-get install -y -q --no-install-recommends "
                    "pocl-opencl-icd", timeout=600, user="0")
    assert icd.returncode == 0, icd.stdout[-2000:] + icd.stderr[-2000:]
    measured = board.run("python", "-m", "advisor.board.measure", "/bundles/b", volumes=[f"{bundle}:/bundles/b"],
                         timeout=300)
    assert measured.returncode == 0, measured.stderr
    results = json.loads((bundle / "results.json").read_text())
    assert results["compiler_loaded"] is False and results["device"].startswith("opencl: ")
    assert [r["status"] for r in results["results"]] == ["ok", "ok"]
    assert all(r["max_abs_err"] <= 1e-3 and r["median_ms"] > 0 for r in results["results"])


def test_server_launcher_binds_loopback_unless_told_otherwise(monkeypatch):
    """advisor.board.server's choices (no buildah needed): loopback by default, all interfaces or a
    public address only with the explicit opt-in, a key only with a tracker."""
    for name in ["RPC_HOST", "RPC_PORT", "RPC_TRACKER", "RPC_KEY", "RPC_EXPOSE", "RPC_CUSTOM_ADDR", "RPC_LOAD_LIBRARY"]:
        monkeypatch.delenv(name, raising=False)

    def command(*argv):
        return server.server_command(server.parser().parse_args(list(argv)))

    assert command()[1:] == ["-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", "9090", "--port-end", "9091"]
    assert server.exposure("127.0.0.1") == "loopback" and server.exposure("10.0.0.7") == "private"
    for exposed in ["0.0.0.0", "::", "8.8.8.8"]:
        with pytest.raises(server.RefusedAddress):
            command("--host", exposed)
        assert "--host" in command("--host", exposed, "--expose")
    monkeypatch.setenv("RPC_HOST", "0.0.0.0")
    monkeypatch.setenv("RPC_EXPOSE", "1")
    assert command()[4] == "0.0.0.0"
    pooled = command("--host", "10.0.0.7", "--tracker", "10.0.0.1:9190", "--key", "board")
    assert pooled[-4:] == ["--tracker", "10.0.0.1:9190", "--key", "board"]
    for wrong in (["--key", "board"], ["--tracker", "10.0.0.1:9190"], ["--port", "0"]):
        with pytest.raises(ValueError):
            command(*wrong)
