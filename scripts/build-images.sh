#!/usr/bin/env bash
# Build advisor's images with buildah (no Docker engine, no image registry needed):
#   advisor-board         docker/Dockerfile.board         TVM runtime + RPC server, no PyTorch
#   advisor-host          docker/Dockerfile.host          advisor, TVM compiler, CPU PyTorch, tracker
#   advisor-board-opencl  docker/Dockerfile.board-opencl  the board + TVM's OpenCL runtime + ICD loader
# Usage: scripts/build-images.sh [board] [host] [board-opencl]   (default: board host;
#        board-opencl builds the board image too, being built on it)
# Makes the base image first when absent (scripts/make-base-image.sh). Layers are cached: a
# second run with nothing changed takes seconds; a change under advisor/ rebuilds only the last
# layers. Builds run under `nice -n 10`. Environment:
#   TORCH_WHEEL=path.whl   the CPU torch wheel to use (else: pip download torch==2.13.0+cpu, which
#                          needs a pip source that has it, e.g.
#                          PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu)
#   OPENCL_RUNTIME=path    TVM's OpenCL runtime library (libtvm_runtime_opencl.so) for board-opencl
#   PIP_CERT               a CA bundle pip must trust (a TLS-inspecting proxy; also read from pip's
#                          config): mounted into the RUN steps with a pip.conf naming it, never
#                          stored in an image
#   BUILDAH_ISOLATION      chroot by default (works without a container runtime or user namespaces)
set -euo pipefail
cd "$(dirname "$0")/.."

requested=" ${*:-board host} "
case "$requested" in *" board-opencl "*) requested="$requested board " ;; esac  # its base: the board image
images=()
for image in board host board-opencl; do  # in this order: board-opencl builds on board
    case "$requested" in *" $image "*) images+=("$image") ;; esac
done
for image in $requested; do
    case "$image" in
        board|host|board-opencl) ;;
        *) echo "error: unknown image $image (board, host, board-opencl)" >&2; exit 2 ;;
    esac
done
command -v buildah >/dev/null || { echo "error: buildah is missing (bash scripts/system-packages.sh)" >&2; exit 2; }
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

scripts/make-base-image.sh

torch_wheel() {
    local dir=docker/.cache/wheels
    mkdir -p "$dir"
    if compgen -G "$dir/torch-2.13.0+cpu-*.whl" >/dev/null; then
        return
    fi
    if [ -n "${TORCH_WHEEL:-}" ]; then
        cp "$TORCH_WHEEL" "$dir/"
    else
        echo "torch: fetching torch==2.13.0+cpu into $dir (pip download; the CPU build, not PyPI's CUDA one)"
        "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$dir" "torch==2.13.0+cpu" || {
            echo "error: no torch==2.13.0+cpu wheel: set TORCH_WHEEL=/path/to/torch-2.13.0+cpu-...whl or" \
                 "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu" >&2
            exit 2
        }
    fi
    compgen -G "$dir/torch-2.13.0+cpu-*.whl" >/dev/null || { echo "error: $dir has no torch-2.13.0+cpu wheel" >&2; exit 2; }
}

opencl_runtime() {
    local dir=docker/.cache/opencl library
    mkdir -p "$dir"
    library=${OPENCL_RUNTIME:-}
    [ -n "$library" ] || { echo "error: board-opencl needs OPENCL_RUNTIME=path/libtvm_runtime_opencl.so (built from TVM's source; docs/boards.md)" >&2; exit 2; }
    [ -f "$library" ] || { echo "error: OpenCL runtime library $library not found" >&2; exit 2; }
    # the image takes whatever lies in this folder: the sidecar or a whole runtime, by its own name
    rm -f "$dir"/*.so
    cp "$library" "$dir/"
    echo "opencl: $(basename "$library") ($(du -h "$library" | cut -f1)) from $library"
}

# pip inside the builds trusts what pip trusts here (a proxy's CA): a folder with that CA and a
# pip.conf naming it is mounted at pip's site config folder for the RUN steps, not copied into a
# layer (only the empty mount point /etc/xdg/pip stays in the images)
build_volumes=()
ca=${PIP_CERT:-$("$PY" -m pip config get global.cert 2>/dev/null | tr -d "'\"" || true)}
if [ -n "$ca" ] && [ -f "$ca" ]; then
    mkdir -p docker/.cache/pip
    cp "$ca" docker/.cache/pip/ca.pem
    printf '[global]\ncert = /etc/xdg/pip/ca.pem\n' >docker/.cache/pip/pip.conf
    build_volumes=(--volume "$PWD/docker/.cache/pip:/etc/xdg/pip:ro")
fi

for image in "${images[@]}"; do
    [ "$image" != host ] || torch_wheel
    [ "$image" != board-opencl ] || opencl_runtime
    started=$SECONDS
    echo "advisor-$image: building docker/Dockerfile.$image"
    log=docker/.cache/build-$image.log
    mkdir -p docker/.cache
    nice -n 10 buildah build --isolation "$BUILDAH_ISOLATION" --layers --force-rm --pull=never "${build_volumes[@]}" \
        --ignorefile docker/dockerignore --build-arg BOARD_IMAGE=localhost/advisor-board:latest \
        -f "docker/Dockerfile.$image" -t "advisor-$image" . >"$log" 2>&1 || {
        tail -n 30 "$log" >&2
        echo "error: advisor-$image did not build (whole log: $log)" >&2
        exit 1
    }
    echo "advisor-$image: built in $((SECONDS - started)) s" \
         "($(buildah images --format '{{.Size}}' "localhost/advisor-$image:latest"))"
done
