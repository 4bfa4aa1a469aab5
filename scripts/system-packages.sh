#!/usr/bin/env bash
# Debian packages the tests need, installed only when missing (needs root or sudo):
#   PoCL + the OpenCL ICD loader: the tests compile generated OpenCL kernels on the CPU;
#   Chromium: a test opens the Pareto page headless and screenshots it.
set -euo pipefail
need=()
[ -e /etc/OpenCL/vendors/pocl.icd ] || need+=(pocl-opencl-icd ocl-icd-opencl-dev)
command -v chromium >/dev/null || need+=(chromium)
#   buildah + debootstrap: tests/test_images.py builds and runs the images (scripts/build-images.sh)
command -v buildah >/dev/null || need+=(buildah)
command -v debootstrap >/dev/null || need+=(debootstrap)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -q
$sudo apt-get install -y -q "${need[@]}"
