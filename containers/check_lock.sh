#!/bin/sh
# Checks that a Python environment holds requirements.lock as pinned.
#
#   check_lock.sh LOCK            every locked package is installed at its locked version
#   check_lock.sh LOCK --exact    ... and nothing else is installed (the CPU image)
#
# LOCK is pip's requirements format as `make lock` writes it: `name[extras]==version \`, then
# its `--hash=` lines and `#` comments. Names are compared normalized (PEP 503: PyYAML is
# pyyaml, smart_open is smart-open), extras dropped. Local build labels are ignored (torch
# 2.13.0+cpu or +cu130 satisfies torch==2.13.0+cpu, the CPU build the lock was resolved with);
# editable installs (the project itself) and pip are left out. The Python used is $PYTHON, or
# `python` on PATH. The images run it while building, the .def's %test after.
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

# One `name==version` per package, normalized; `comm` needs both sides sorted the same way:
# byte order. setuptools is locked, so freeze lists it too (--all); pip is not.
normalize() {
    sed -E 's/[[:space:]]*\\?$//; s/\[[^]]*\]//; s/\+[A-Za-z0-9.]+$//' |
        awk -F'==' '{ name = tolower($1); gsub(/[-_.]+/, "-", name); print name "==" $2 }' | LC_ALL=C sort
}
"${PYTHON:-python}" -m pip freeze --all --exclude-editable | grep -Ev '^pip==' | normalize >"$workdir/installed"
grep -E '^[A-Za-z0-9]' "$lock" | normalize >"$workdir/locked"

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
