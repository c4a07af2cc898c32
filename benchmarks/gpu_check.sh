#!/usr/bin/env bash
# Everything that must pass on a GPU before a change that touches CUDA is done, in
# one run from the source tree (no install, no network), with logs under $OUT:
#
#   OUT=/tmp/gpu-logs bash benchmarks/gpu_check.sh
#
# BINDINGS_WHEELS=DIR (a folder of cuda-bindings wheels, e.g. 12.9.10 and the newest
# 13.x, whose IPC handle type differs from the machine's 13.3, and a cuda-pathfinder
# wheel new enough for them) runs the suite again with each; PREVIOUS_SRC=DIR (the src/ of an earlier checkout) benches it beside
# this one, back to back on the same machine. Steps run most important first, each
# timed, so that a device session that runs out of time still has the essentials.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/extstream-gpu}
mkdir -p "$OUT"
export PYTHONPATH=src NCCL_NVLS_ENABLE=0
status=0

run() {  # run NAME COMMAND...: its output in $OUT/NAME.txt, its exit status counted
  local name=$1 started=$SECONDS code=0
  shift
  echo "== $name: $*"
  "$@" > "$OUT/$name.txt" 2>&1 || code=$?
  [ "$code" = 0 ] || { status=1; echo "   exit $code (see $OUT/$name.txt)"; }
  tail -n 2 "$OUT/$name.txt"
  echo "   $((SECONDS - started)) s"
}

nvidia-smi -L > "$OUT/gpus.txt" 2>&1
run self-check python3 -m extstream
run tests env EXTSTREAM_REQUIRE_GPU=1 python3 -m pytest -q -p no:cacheprovider -rs tests
run stress python3 benchmarks/stress.py
run bench python3 -m extstream bench --json "$OUT/bench.json"
run targets python3 benchmarks/targets.py "$OUT/bench.json"
run callbacks python3 benchmarks/callbacks.py
run call-paths python3 benchmarks/call_paths.py
if [ -n "${PREVIOUS_SRC:-}" ]; then
  run bench-previous env PYTHONPATH="$PREVIOUS_SRC" python3 -m extstream bench
fi
for wheel in "${BINDINGS_WHEELS:-/nonexistent}"/cuda_bindings-*.whl; do
  [ -f "$wheel" ] || continue
  version=$(basename "$wheel" | cut -d- -f2)
  target="$OUT/bindings-$version"
  rm -rf "$target" && mkdir -p "$target"
  # with a cuda-pathfinder wheel from the folder, if one is there (13.5 needs >= 1.4.2)
  python3 -m pip install -q --no-deps --no-index --target "$target" "$wheel" \
    $(ls "$BINDINGS_WHEELS"/cuda_pathfinder-*.whl 2>/dev/null) > "$target-install.txt" 2>&1
  run "tests-bindings-$version" env PYTHONPATH="$target:src" EXTSTREAM_REQUIRE_GPU=1 \
    python3 -m pytest -q -p no:cacheprovider -rs tests
done
exit $status
