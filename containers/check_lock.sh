#!/bin/sh
# Checks that a Python environment holds requirements.lock as pinned.
#
#   check_lock.sh LOCK            every locked package is installed at its locked version
#   check_lock.sh LOCK --exact    ... and nothing else is installed (the CPU image)
#
# Local build labels are ignored (torch 2.13.0+cpu or +cu130 satisfies torch==2.13.0, as
# PEP 440 says); editable installs (the project itself) are left out. The Python used is
# $PYTHON, or `python` on PATH. The images run it while building, the .def's %test after.
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ] || { [ $# -eq 2 ] && [ "$2" != "--exact" ]; }; then
    echo "usage: $0 LOCK [--exact]" >&2
    exit 2
fi
lock=$1
exact=${2:-}
if [ ! -f "$lock" ]; then
    echo "$lock: lock file not found" >&2
    exit 2
fi

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

# Local labels dropped on both sides; `comm` needs both sorted the same way: byte order.
strip_local_label() { sed -E 's/\+[A-Za-z0-9.]+$//'; }
"${PYTHON:-python}" -m pip freeze --exclude-editable | strip_local_label | LC_ALL=C sort >"$workdir/installed"
grep -Ev '^[[:space:]]*(#|$)' "$lock" | strip_local_label | LC_ALL=C sort >"$workdir/locked"

LC_ALL=C comm -23 "$workdir/locked" "$workdir/installed" >"$workdir/missing"
LC_ALL=C comm -13 "$workdir/locked" "$workdir/installed" >"$workdir/extra"

status=0
if [ -s "$workdir/missing" ]; then
    echo "$lock: these pins are not installed as locked (missing or another version):" >&2
    sed 's/^/  /' "$workdir/missing" >&2
    status=1
fi
if [ "$exact" = "--exact" ] && [ -s "$workdir/extra" ]; then
    echo "$lock: installed but not in the lock (or at another version):" >&2
    sed 's/^/  /' "$workdir/extra" >&2
    status=1
fi
if [ "$status" -eq 0 ]; then
    echo "$lock: $(wc -l <"$workdir/locked" | tr -d ' ') pins installed as locked${exact:+, nothing else}"
fi
exit "$status"
