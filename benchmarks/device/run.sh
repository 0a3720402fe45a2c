#!/usr/bin/env bash
# Run the device benchmark: install the wheelhouse, measure, write $OUT/device.json and device.log.
#
#   benchmarks/device/run.sh            on the GPU machine (python3.12 with torch, no network): about 6 minutes
#   benchmarks/device/run.sh --smoke    the same code paths with tiny sizes on the CPU (about a minute)
#
# Environment:
#   PYTHON      interpreter (default: python3 on the GPU machine; with --smoke, .venv/bin/python if present)
#   OUT         folder for device.json and device.log (default: ./device-bench-out)
#   BENCH_BUDGET_S   seconds for the measurements (default 330; smoke 240); the whole run is
#               killed 60 s after that, and device.json keeps what was measured
#   DEVICE_SITE how the packages are found:
#               wheels    unpack benchmarks/device/wheels/ (prepare.sh) into a folder on PYTHONPATH
#                         (default when the wheelhouse exists and PYTHON's version matches it)
#               simulate  only what the device machine would have, linked from PYTHON's own
#                         site-packages (default for --smoke otherwise: finds a missing wheel here)
#               own       PYTHON's environment as it is (a machine with the project's .venv)
# Further arguments go to bench.py (e.g. --sections inference,end_to_end).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SMOKE=0
ARGS=()
for a in "$@"; do
    if [[ "$a" == "--smoke" ]]; then SMOKE=1; fi
    ARGS+=("$a")
done
if [[ -z "${PYTHON:-}" ]]; then
    if (( SMOKE )) && [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
OUT="${OUT:-$PWD/device-bench-out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/device.log"
if (( SMOKE )); then BUDGET="${BENCH_BUDGET_S:-240}"; else BUDGET="${BENCH_BUDGET_S:-330}"; fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fastscan-device.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
t_start=$(date +%s)

{
    echo "fastscan device benchmark: $(date -u +%FT%TZ), $(hostname), PYTHON=$PYTHON ($("$PYTHON" -V 2>&1))"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
} 2>&1 | tee "$LOG"

PYVER="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
WHEELS="$HERE/wheels"
shopt -s nullglob
have_wheels=0
for w in "$WHEELS"/*-cp"$PYVER"-*.whl; do have_wheels=1; break; done
MODE="${DEVICE_SITE:-}"
if [[ -z "$MODE" ]]; then
    if (( have_wheels )); then MODE=wheels; elif (( SMOKE )); then MODE=simulate; else MODE=own; fi
fi

PYFLAGS=()
case "$MODE" in
    wheels)
        SITE="$WORK/site"
        t0=$(date +%s)
        if "$PYTHON" -m pip --version >/dev/null 2>&1; then
            "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --disable-pip-version-check \
                --target "$SITE" "$WHEELS"/*.whl 2>&1 | grep -v "^WARNING: Location" | tee -a "$LOG"
            status=${PIPESTATUS[0]}
        else
            status=1
        fi
        if (( status != 0 )); then
            echo "pip could not install the wheels; unpacking them instead" | tee -a "$LOG"
            "$PYTHON" "$HERE/device_env.py" install "$WHEELS" "$SITE" 2>&1 | tee -a "$LOG" || exit 1
        fi
        echo "installed $(ls "$WHEELS"/*.whl | wc -l) wheels into $SITE in $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
        # fastscan itself from the working tree (its requires-python does not cover 3.12).
        export PYTHONPATH="$SITE:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
        ;;
    simulate)
        SITE="$("$PYTHON" "$HERE/device_env.py" site "$WORK/site")" || exit 1
        echo "simulated device site (present.txt + wheels.txt from $PYTHON's site-packages): $SITE" | tee -a "$LOG"
        export PYTHONPATH="$SITE:$ROOT/src"
        PYFLAGS=(-S)
        ;;
    own)
        (( SMOKE )) || (( have_wheels )) || [[ -n "${DEVICE_SITE:-}" ]] ||
            echo "no cp$PYVER wheels in $WHEELS: using $PYTHON's own packages (run prepare.sh where there is network)" | tee -a "$LOG"
        export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
        ;;
    *)
        echo "DEVICE_SITE must be wheels, simulate or own, not '$MODE'" >&2
        exit 2
        ;;
esac
echo "packages: $MODE" | tee -a "$LOG"

# Hard stop a minute after the budget: bench.py saves device.json after every measurement.
export PYTHONUNBUFFERED=1 PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::FutureWarning,ignore::DeprecationWarning}"
timeout --signal=TERM --kill-after=15 $(( ${BUDGET%.*} + 60 )) \
    "$PYTHON" ${PYFLAGS[@]+"${PYFLAGS[@]}"} "$HERE/bench.py" --out "$OUT" --budget "$BUDGET" ${ARGS[@]+"${ARGS[@]}"} 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
if (( rc == 124 || rc == 137 )); then
    echo "bench.py was stopped at its time limit (rc $rc); device.json holds what was measured:" | tee -a "$LOG"
    "$PYTHON" ${PYFLAGS[@]+"${PYFLAGS[@]}"} "$HERE/bench.py" --table "$OUT/device.json" 2>&1 | tee -a "$LOG"
fi
echo "run.sh: rc $rc, $(( $(date +%s) - t_start )) s in all; results in $OUT/device.json, log in $LOG" | tee -a "$LOG"
exit "$rc"
