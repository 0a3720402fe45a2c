#!/usr/bin/env bash
# Build the wheelhouse the device benchmark installs on a GPU machine without network access.
#
#   benchmarks/device/prepare.sh           download the wheels of wheels.txt into benchmarks/device/wheels/
#   benchmarks/device/prepare.sh --check   offline: check wheels.txt and present.txt, download nothing
#
# The device machine runs python3.12 with its own torch, torchvision, numpy, scipy, pandas,
# scikit-image, tifffile, matplotlib and tqdm (present.txt); everything else fastscan imports on
# the benchmarked paths travels as cp312 manylinux (or pure-Python) wheels, pinned in wheels.txt
# to the versions of the project's .venv. The working tree that is copied to the device machine
# may hold 64 MiB in all, so the wheelhouse is refused above WHEELHOUSE_MAX_MIB (default 40).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DEST="${WHEELHOUSE:-$HERE/wheels}"
MAX_MIB="${WHEELHOUSE_MAX_MIB:-40}"
PY_VERSION="${DEVICE_PYTHON_VERSION:-3.12}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

# name==version lines of wheels.txt, comments and blank lines dropped
pins() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$HERE/wheels.txt" | grep -v '^$'; }

check() {
    # Every entry is pinned, no name is both shipped and present, and no wheel is shipped twice.
    "$PYTHON" - "$HERE" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import fnmatch
from device_env import canonical, present, read_list, shipped, HERE

names = [canonical(e.partition("==")[0]) for e in read_list(HERE / "wheels.txt")]
pins = shipped()  # raises on an unpinned entry
dupes = sorted({n for n in names if names.count(n) > 1})
both = sorted(n for n in pins if any(fnmatch.fnmatch(n, p) for p in present()))
problems = [f"listed twice in wheels.txt: {', '.join(dupes)}"] * bool(dupes)
problems += [f"in both wheels.txt and present.txt (a shipped copy would shadow the machine's): {', '.join(both)}"] * bool(both)
if problems:
    sys.exit("prepare.sh --check: " + "; ".join(problems))
print(f"wheels.txt: {len(pins)} pinned wheels; present.txt: {len(present())} distributions of the device machine")
PY
}

if [[ "${1:-}" == "--check" ]]; then
    check
    exit 0
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--check]" >&2
    exit 2
fi

check
mkdir -p "$DEST"
mapfile -t WANT < <(pins)
# Wheels of earlier runs that wheels.txt no longer pins would travel for nothing.
"$PYTHON" - "$DEST" "${WANT[@]}" <<'PY'
import re, sys
from pathlib import Path
dest, want = Path(sys.argv[1]), {re.sub(r"[-_.]+", "-", w.partition("==")[0]).lower() + "==" + w.partition("==")[2] for w in sys.argv[2:]}
for whl in dest.glob("*.whl"):
    name, version = whl.name.split("-")[:2]
    if re.sub(r"[-_.]+", "-", name).lower() + "==" + version not in want:
        print(f"removing {whl.name} (not in wheels.txt)")
        whl.unlink()
PY
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$DEST" \
    --python-version "$PY_VERSION" --implementation cp --abi "cp${PY_VERSION/./}" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    "${WANT[@]}"

count=$(find "$DEST" -maxdepth 1 -name '*.whl' | wc -l)
kib=$(du -sk "$DEST" | cut -f1)
mib=$(( (kib + 1023) / 1024 ))
echo "wheelhouse $DEST: $count wheels, $mib MiB (limit $MAX_MIB MiB)"
if (( count != ${#WANT[@]} )); then
    echo "error: expected ${#WANT[@]} wheels, found $count" >&2
    exit 1
fi
if (( mib > MAX_MIB )); then
    echo "error: the wheelhouse is $mib MiB, over the $MAX_MIB MiB limit (the copied working tree may hold 64 MiB in all)" >&2
    exit 1
fi
