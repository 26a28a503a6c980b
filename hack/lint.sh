#!/usr/bin/env bash
# make lint: formatting (clang-format, no changes allowed) and static analysis (clang-tidy) over
# every C++ source in the repository, using the build's compile_commands.json.
set -euo pipefail
build_dir=${1:-build}
cd "$(dirname "$0")/.."
mapfile -t sources < <(git ls-files '*.cc' '*.h')
[ ${#sources[@]} -gt 0 ] || exit 0
echo "[lint] clang-format on ${#sources[@]} files" >&2
clang-format --dry-run -Werror "${sources[@]}"
mapfile -t units < <(git ls-files '*.cc' | grep -v -E '^(tests|e2e|bench)/')
echo "[lint] clang-tidy on ${#units[@]} translation units" >&2
printf '%s\n' "${units[@]}" | xargs -r -P "$(nproc)" -n 4 clang-tidy -p "$build_dir" --quiet
echo "[lint] ok" >&2
