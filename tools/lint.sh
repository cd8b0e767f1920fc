#!/usr/bin/env bash
# The static checks CI runs (tools/test.sh), with Debian's clang-14 tools:
#   tools/lint.sh format            every tracked C++, CUDA and proto file is as
#                                   clang-format-14 (the repo's .clang-format) writes it
#   tools/lint.sh tidy BUILD_DIR... clang-tidy-14 (the repo's .clang-tidy) finds
#                                   nothing in any tracked .cc file; each file is
#                                   checked with its flags from the first
#                                   BUILD_DIR's compile_commands.json that builds
#                                   it (a built tree: generated headers must exist)
# With no arguments: both, tidy with build/ (or $KVTIER_BUILD_DIR) and build-asan/
# (or $KVTIER_SANITIZE_BUILD_DIR) where they exist. $KVTIER_JOBS (2) files at a
# time; $KVTIER_TIDY_EXCLUDE: path prefixes (space-separated) tidy skips. Exits 1
# naming what fails.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
jobs="${KVTIER_JOBS:-2}"

need() {
  command -v "$1" >/dev/null || { echo "tools/lint.sh: $1 not found (tools/deps.sh installs it)" >&2; exit 2; }
}

check_format() {
  need clang-format-14
  local out
  if out="$(git ls-files -z '*.h' '*.cc' '*.cu' '*.cuh' '*.proto' |
    xargs -0 -r -n 16 -P "$jobs" clang-format-14 --style=file --dry-run --Werror 2>&1)"; then
    echo "tools/lint.sh: clang-format clean"
    return
  fi
  # --dry-run prints every misformatted line; name only the files.
  local files
  files="$(sed -n -E 's/^([^:]+):[0-9]+:[0-9]+: error: code should be clang-formatted.*/  \1/p' <<<"$out" | sort -u)"
  if [ -n "$files" ]; then
    echo "tools/lint.sh: not as clang-format-14 writes them (clang-format-14 -i --style=file FILE):" >&2
    echo "$files" >&2
  else
    echo "$out" >&2
  fi
  return 1
}

check_tidy() {
  need clang-tidy-14
  [ $# -gt 0 ] || { echo "tools/lint.sh: tidy needs a build directory" >&2; exit 2; }
  local dir file found
  for dir in "$@"; do
    [ -f "$dir/compile_commands.json" ] ||
      { echo "tools/lint.sh: no $dir/compile_commands.json (configure and build it first)" >&2; exit 2; }
  done
  # Each file goes to the first build that compiles it; CUDA sources are not
  # checked (clang-tidy would need the CUDA toolkit's clang support).
  declare -A files_of=()
  local unbuilt=()
  local skip
  while IFS= read -r file; do
    for skip in ${KVTIER_TIDY_EXCLUDE:-}; do
      [[ $file == "$skip"* ]] && continue 2
    done
    found=""
    for dir in "$@"; do
      if grep -qF "\"file\": \"$root/$file\"" "$dir/compile_commands.json"; then
        files_of[$dir]+="$file"$'\n'
        found=1
        break
      fi
    done
    [ -n "$found" ] || unbuilt+=("$file")
  done < <(git ls-files '*.cc')
  [ ${#unbuilt[@]} -eq 0 ] || echo "tools/lint.sh: not built here, so not checked: ${unbuilt[*]}"

  local failed=0 count=0 out
  for dir in "$@"; do
    [ -n "${files_of[$dir]:-}" ] || continue
    count=$((count + $(grep -c . <<<"${files_of[$dir]}")))
    # The GCC build's commands carry GCC-only flags (-Wno-restrict) clang
    # does not know.
    out="$(printf '%s' "${files_of[$dir]}" |
      xargs -r -d '\n' -n 1 -P "$jobs" clang-tidy-14 --quiet -p "$dir" \
        --extra-arg=-Wno-unknown-warning-option 2>&1)" || failed=1
    # clang-tidy counts what it suppressed in headers outside the filter;
    # only findings are worth reading.
    grep -v -E '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$' <<<"$out" || true
  done
  if [ "$failed" -ne 0 ]; then
    echo "tools/lint.sh: clang-tidy found the problems above (.clang-tidy)" >&2
    return 1
  fi
  echo "tools/lint.sh: clang-tidy clean ($count files)"
}

case "${1:-}" in
  format) check_format ;;
  tidy) shift; check_tidy "$@" ;;
  "")
    check_format
    dirs=()
    for dir in "${KVTIER_BUILD_DIR:-$root/build}" "${KVTIER_SANITIZE_BUILD_DIR:-$root/build-asan}"; do
      [ -f "$dir/compile_commands.json" ] && dirs+=("$dir")
    done
    check_tidy "${dirs[@]}"
    ;;
  *) echo "usage: tools/lint.sh [format | tidy BUILD_DIR...]" >&2; exit 2 ;;
esac
