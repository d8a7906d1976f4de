#!/bin/sh
# Makes a Debian bookworm base image from Debian packages alone, for building Dockerfile.cpu
# where no image registry can be reached:
#
#   containers/make_base.sh [IMAGE]        (default IMAGE: localhost/cfqa-base:bookworm)
#
# bookworm's python3 is 3.11, the Python requirements.lock is resolved for. The image holds
# what `python3 -m venv` and pip need (python3-venv brings ensurepip's wheels;
# ca-certificates lets pip verify PyPI) and apt, so Dockerfile.cpu's own apt-get step works
# as it does on the python:3.11-slim-bookworm base. The mirror is Debian's, as the host's
# apt uses it; MIRROR overrides it. SOURCE_DATE_EPOCH, when set, makes the tarball
# reproducible (mmdebstrap honours it).
set -eu

image=${1:-localhost/cfqa-base:bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
for tool in mmdebstrap podman; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found (apt-get install $tool)" >&2; exit 2; }
done

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

# Documentation, manuals and translations stay out, as in Debian's slim images (copyright
# files stay); the dpkg options remain in the image, so later apt-get installs follow them.
mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    --aptopt='Acquire::Retries "3"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    bookworm "$workdir/base.tar" \
    "deb $mirror bookworm main" \
    "deb $mirror bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"

# podman import makes a one-layer image; the config mirrors the Debian images' defaults.
podman import --quiet --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$workdir/base.tar" "$image" >/dev/null
echo "$image: $(podman image inspect --format '{{.Size}}' "$image") bytes"
