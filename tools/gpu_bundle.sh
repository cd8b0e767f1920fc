#!/usr/bin/env bash
# Builds the GPU test and bench binaries (Release, CUDA on) and packs them,
# with the shared libraries they need beyond glibc and the CUDA toolkit, the
# tiny real model and tools/gpu_check.sh, into gpu-bundle/ (git-ignored): a
# folder to carry to a GPU machine that has none of our apt packages (the
# files compressed into bundle.tar.gz, beside the check script). There:
#   bash gpu-bundle/gpu_check.sh OUT_DIR
# runs the GPU tests, a kvtierd --device cuda smoke test and gpu_bench.
# Usage: tools/gpu_bundle.sh   (needs nvcc at /usr/local/cuda and ../shared/data)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${KVTIER_GPU_BUILD_DIR:-$root/build-gpu}"
out="$build/bundle"
dest="$root/gpu-bundle"
shared="${KVTIER_SHARED_DATA:-$root/../shared/data}"
"$root/tools/deps.sh" --bench
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVTIER_CUDA=ON \
  -DKVTIER_BUILD_TESTS=ON -DKVTIER_BUILD_BENCH=ON >/dev/null
bins=(kernels_test hbm_test gpu_forward_test engine_test gpu_bench kvtierd kvtier)
ninja -C "$build" -j2 "${bins[@]}"
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/data/models"
for b in "${bins[@]}"; do
  cp "$build/bin/$b" "$out/bin/"
  strip --strip-debug "$out/bin/$b"
done
# Every library the binaries load except glibc's own and CUDA's (the GPU
# machine has its toolkit and driver).
for b in "${bins[@]}"; do
  ldd "$build/bin/$b" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so* | libm.so* | libdl.so* | librt.so* | libpthread.so* | ld-linux*) ;;
    libcuda.so* | libcublas* | libcudart*) ;;
    *) cp -L "$lib" "$out/lib/" ;;
  esac
done
cp -r "$shared/models/stories260K" "$out/data/models/"
rm -rf "$dest"
mkdir -p "$dest"
tar -C "$out" -czf "$dest/bundle.tar.gz" .
cp "$root/tools/gpu_check.sh" "$dest/"
du -sh "$out" "$dest"
