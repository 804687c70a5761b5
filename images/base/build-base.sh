#!/usr/bin/env bash
# Make sure a Debian bookworm base image for the sandbox exists locally, and print its name.
#
# In order: $BASE_IMAGE (default debian:bookworm-slim) if present locally; else, for the default,
# agentvisor/base:bookworm if present; else `docker pull` $BASE_IMAGE; else, for the default,
# build agentvisor/base:bookworm from a debootstrap minbase rootfs (for machines that reach no
# container registry, only a Debian mirror). The rootfs tarball is cached under
# ${XDG_CACHE_HOME:-~/.cache}/agentvisor/, so a rebuild after `docker rmi` takes seconds.
#
# Progress goes to stderr; stdout gets one line, the image to pass as BASE_IMAGE.
# Environment: BASE_IMAGE, DEBIAN_MIRROR (default http://deb.debian.org/debian),
# PULL_TIMEOUT_S (default 60), AGENTVISOR_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/agentvisor).

set -euo pipefail

exec 3>&1 1>&2 # keep stdout for the answer only

DEFAULT_IMAGE=debian:bookworm-slim
BASE_IMAGE="${BASE_IMAGE:-$DEFAULT_IMAGE}"
LOCAL_IMAGE="agentvisor/base:bookworm"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PULL_TIMEOUT_S="${PULL_TIMEOUT_S:-60}"
CACHE_DIR="${AGENTVISOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentvisor}"
# Bump when the rootfs recipe below changes, so that cached tarballs are not reused.
RECIPE=1
TARBALL="$CACHE_DIR/base-$SUITE-minbase-r$RECIPE.tar.gz"

say() { echo "build-base: $*"; }
die() { echo "build-base: ERROR: $*"; exit 1; }
answer() { say "using $1"; echo "$1" >&3; exit 0; }

present() { docker image inspect "$1" >/dev/null 2>&1; }

docker info >/dev/null 2>&1 || die "the Docker engine does not answer: run 'make setup' (it starts dockerd)"

present "$BASE_IMAGE" && answer "$BASE_IMAGE"
if [ "$BASE_IMAGE" != "$DEFAULT_IMAGE" ] && [ "$BASE_IMAGE" != "$LOCAL_IMAGE" ]; then
    say "pulling $BASE_IMAGE (at most ${PULL_TIMEOUT_S}s)"
    timeout "$PULL_TIMEOUT_S" docker pull -q "$BASE_IMAGE" && answer "$BASE_IMAGE"
    die "cannot pull $BASE_IMAGE: pull or build it yourself, or leave BASE_IMAGE unset"
fi
# Built here before: as good as the slim image, and no registry round trip.
present "$LOCAL_IMAGE" && answer "$LOCAL_IMAGE"
if [ "$BASE_IMAGE" = "$DEFAULT_IMAGE" ]; then
    say "pulling $BASE_IMAGE (at most ${PULL_TIMEOUT_S}s)"
    timeout "$PULL_TIMEOUT_S" docker pull -q "$BASE_IMAGE" && answer "$BASE_IMAGE"
    say "cannot pull $BASE_IMAGE: building $LOCAL_IMAGE with debootstrap instead"
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    die "building the base image with debootstrap needs root: run as root or install sudo"
fi

WORK=""
# shellcheck disable=SC2016,SC2317 # run by the EXIT trap; $1 is for the inner sh
remove_work() {
    [ -n "$WORK" ] || return 0
    # A failed debootstrap may leave /proc or /sys mounted inside: unmount, and never cross.
    "${SUDO[@]}" sh -c 'grep -o " $1/[^ ]*" /proc/mounts | sort -r | xargs -r umount -l
                        rm -rf --one-file-system "$1"' sh "$WORK"
}

make_tarball() {
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing: run 'make setup'"
    mkdir -p "$CACHE_DIR"
    WORK="$(mktemp -d /var/tmp/agentvisor-base.XXXXXX)"
    trap remove_work EXIT
    local work="$WORK" rootfs="$WORK/rootfs"
    say "debootstrap --variant=minbase $SUITE from $MIRROR (a minute or two)"
    "${SUDO[@]}" debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
        tail -n 30 "$work/debootstrap.log"
        die "debootstrap failed (last lines above): check that $MIRROR answers"
    }
    # Make it like debian:bookworm-slim: updates and security sources, no docs, man pages or
    # translations (nor in what apt installs later), no package caches.
    # shellcheck disable=SC2016 # the script is for the inner sh
    "${SUDO[@]}" sh -eu -c '
        r="$1"; mirror="$2"; suite="$3"
        security="${mirror%/debian}/debian-security"
        printf "deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n" \
            "$mirror" "$suite" "$mirror" "$suite" "$security" "$suite" > "$r/etc/apt/sources.list"
        cat > "$r/etc/dpkg/dpkg.cfg.d/docker" <<EOF
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
        echo "Acquire::Languages \"none\";" > "$r/etc/apt/apt.conf.d/docker-no-languages"
        find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
        find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
        rm -rf "$r"/usr/share/man/* "$r"/usr/share/groff/* "$r"/usr/share/info/* \
            "$r"/usr/share/lintian/* "$r"/usr/share/linda/* "$r"/usr/share/locale/* \
            "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/* \
            "$r"/var/log/* "$r"/tmp/* "$r"/dev/* "$r"/proc/* "$r"/sys/* "$r"/run/*
    ' sh "$rootfs" "$MIRROR" "$SUITE"
    say "packing the rootfs into $TARBALL"
    "${SUDO[@]}" tar -C "$rootfs" --numeric-owner -c . | gzip -1 >"$TARBALL.tmp"
    mv "$TARBALL.tmp" "$TARBALL"
}

[ -s "$TARBALL" ] || make_tarball
say "importing $TARBALL as $LOCAL_IMAGE"
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    --message "debootstrap --variant=minbase $SUITE $MIRROR (agentvisor recipe $RECIPE)" \
    "$TARBALL" "$LOCAL_IMAGE" >/dev/null \
    || die "docker import of $TARBALL failed: delete it and run again"
answer "$LOCAL_IMAGE"
