#!/usr/bin/env bash
# Checks the dependency rule of docs/architecture.md on #include lines: a file
# in folder F may include our headers only from the folders F may depend on.
# cmake/KvtierLayout.cmake checks the same rule on the link graph. Exits 1 and
# names each offending line when the rule is broken.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# What each folder may include besides itself (the rule, closed transitively).
declare -A may=(
  [common]=""
  [kernels]="common"
  [tiers]="kernels common"
  [cache]="tiers common"
  [context]="tiers common"
  [replay]="cache tiers common"
  [model]="kernels common"
  [engine]="cache context model tiers kernels common"
  [proto]="common"
  [server]="engine cache context model tiers kernels proto common"
  [tools]="replay cache tiers model kernels proto common"
  [bench]="engine cache context model replay tiers kernels proto common"
)
# Within tiers/, tiers/hbm may reach all of kernels/ (the GPU copy kernels);
# the other tiers only kernels/device.h (the DRAM tier pins its arena). cache/ and context/ reach tiers/ only through the Tier interface and the
# RocksDB guard.
declare -A narrow=(
  [cache]="tiers/tier.h tiers/calibration.h tiers/fault_injection_tier.h"
  [context]="tiers/rocks/rocks_write_guard.h tiers/rocks/rocks_info_log.h"
)

bad=0
for folder in "${!may[@]}"; do
  [[ -d $folder ]] || continue
  while IFS= read -r hit; do
    file=${hit%%:*}
    rest=${hit#*:}
    line=${rest%%:*}
    header=$(sed -E 's/.*#include "([^"]+)".*/\1/' <<<"${rest#*:}")
    top=${header%%/*}
    [[ $header == */* ]] || continue
    ok=0
    if [[ $top == "$folder" ]]; then
      ok=1
    elif [[ " ${may[$folder]} " == *" $top "* ]]; then
      ok=1
      if [[ -n ${narrow[$folder]:-} && $top == tiers ]]; then
        [[ " ${narrow[$folder]} " == *" $header "* ]] || ok=0
      fi
      if [[ $folder == tiers && $top == kernels && $file != tiers/hbm/* &&
            $header != kernels/device.h ]]; then
        ok=0
      fi
    fi
    if ((!ok)); then
      echo "$file:$line: $folder/ may not include \"$header\" (docs/architecture.md)" >&2
      bad=1
    fi
  done < <(grep -rnE '^\s*#\s*include\s+"' "$folder" --include='*.h' --include='*.cc' \
             --include='*.cu' --include='*.cuh' || true)
done
if ((bad)); then
  exit 1
fi
echo "layout: every #include follows the dependency rule"
