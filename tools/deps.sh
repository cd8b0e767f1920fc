#!/usr/bin/env bash
# Installs the Debian 12 packages kvtier builds with. Idempotent and quiet when
# everything is present; needs root (or sudo) only when something is missing.
# Usage: tools/deps.sh [--bench]
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  librocksdb-dev liburing-dev libxxhash-dev nlohmann-json3-dev libssl-dev
  libcpp-httplib-dev  # the Prometheus /metrics endpoint
  libhiredis-dev redis-server  # the cluster tier, and the Redis Cluster its tests and tools start
  libgtest-dev libgmock-dev libbenchmark-dev
  libsentencepiece-dev  # tests only: the reference for our tokenizer.model reader
  clang-14 libclang-rt-14-dev  # the sanitizer build and the fuzz targets (ASan, UBSan, libFuzzer)
  clang-format-14 clang-tidy-14  # tools/lint.sh
  jq prometheus  # promtool and jq: tools/monitoring/check.sh (the package also installs a
                 # Prometheus server service, which systemd starts where it runs)
)
# --bench: also what the benchmarks compare against (fio, the flash peer;
# OpenBLAS, the GEMM peer; oneDNN, the bf16 GEMM peer, whose CMake config
# asks for OpenCL's; gnuplot, the trace plots).
if [ "${1:-}" = "--bench" ]; then
  packages+=(fio libopenblas-dev libdnnl-dev ocl-icd-opencl-dev gnuplot-nox)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "tools/deps.sh: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "tools/deps.sh: need root or sudo to install packages" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
