#!/usr/bin/env bash
# Prepare a Debian machine for agentvisor: system packages, a running Docker engine, and .venv.
#
# Idempotent and quick when everything is already there. Run it as root (CI) or as a normal user
# with sudo rights: only the apt and dockerd steps use sudo, the venv belongs to the user (also
# under `sudo make setup`, where it is created as $SUDO_USER).
#
#   scripts/setup.sh             what running agentvisor needs (`make setup`, `make up`)
#   scripts/setup.sh --dev       and what the tests and lint need: the dev extras, chromium (the
#                                dashboard's browser test), systemd, docker-compose (`make test`)
#   scripts/setup.sh --dry-run   print the privileged commands instead of running them
#
# Environment: PYTHON (default python3, must be >= 3.11), DOCKERD_TIMEOUT_S (default 60),
# AGENTVISOR_BIN_DIR (where the `agentvisor` command is linked; default /usr/local/bin for root,
# ~/.local/bin otherwise; `none` links nothing).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# The stamps of a finished install: the runtime one, and the dev one (whose name is the one
# setup wrote when it always installed the dev extras, so an older venv counts as complete).
STAMP="$VENV/.agentvisor-setup-runtime-stamp"
DEV_STAMP="$VENV/.agentvisor-setup-stamp"
DOCKERD_LOG=/var/log/agentvisor-dockerd.log
DOCKERD_TIMEOUT_S="${DOCKERD_TIMEOUT_S:-60}"
PYTHON="${PYTHON:-python3}"
DRY_RUN=0
DEV=0

for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        --dev) DEV=1 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "setup: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

say() { echo "setup: $*" >&2; }
die() { echo "setup: ERROR: $*" >&2; exit 1; }

# Privileged commands go through `as_root`; --dry-run only prints them.
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    SUDO=(missing-sudo)
fi

as_root() {
    if [ "$DRY_RUN" -eq 1 ]; then
        echo "+ ${SUDO[*]:+${SUDO[*]} }$*" >&2
        return 0
    fi
    if [ "${SUDO[0]:-}" = missing-sudo ]; then
        die "'$*' needs root: run this script as root or install sudo"
    fi
    "${SUDO[@]}" "$@"
}

# Commands for the venv run as the invoking user, also when that user called us through sudo.
as_user() {
    if [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
        sudo -u "$SUDO_USER" -H "$@"
    else
        "$@"
    fi
}

# --- system packages -------------------------------------------------------------------------

docker_answers() { timeout 20 docker info >/dev/null 2>&1; }

pkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

install_packages() {
    local wanted=(tmux git python3-venv debootstrap ca-certificates) missing=() pkg
    # Only for the tests: the dashboard's browser test drives Debian's chromium through
    # Playwright; `systemd-analyze verify` checks the unit `agentvisor service install` writes
    # (a host that runs systemd has it already).
    [ "$DEV" -eq 1 ] && wanted+=(chromium systemd)
    # docker.io only when no engine is reachable and none is installed: a machine with Docker's
    # own docker-ce packages (or Docker Desktop, or a remote DOCKER_HOST) keeps what it has.
    if ! docker_answers && ! command -v dockerd >/dev/null 2>&1; then
        wanted+=(docker.io)
    fi
    if ! command -v dpkg-query >/dev/null 2>&1; then
        for pkg in tmux git; do
            command -v "$pkg" >/dev/null 2>&1 || die "'$pkg' is missing and this is not a Debian system: install it by hand"
        done
        say "not a Debian system: skipping apt (install docker, tmux, git, debootstrap by hand)"
        return 0
    fi
    for pkg in "${wanted[@]}"; do
        pkg_installed "$pkg" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        say "system packages present"
        return 0
    fi
    say "installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        || die "apt-get update failed: check the network and /etc/apt/sources.list"
    # With recommends: debootstrap needs debian-archive-keyring, dockerd cgroupfs-mount here.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" \
        || die "apt-get install ${missing[*]} failed: see the apt output above"
}

# --- docker engine ---------------------------------------------------------------------------

ensure_docker() {
    if docker_answers; then
        say "docker engine answers"
        return 0
    fi
    command -v docker >/dev/null 2>&1 || die "the docker client is missing: apt-get install docker.io"
    if pgrep -x dockerd >/dev/null 2>&1; then
        if [ "$(id -u)" -ne 0 ] && [ -S /var/run/docker.sock ] && [ ! -w /var/run/docker.sock ]; then
            die "dockerd runs but $(id -un) may not use /var/run/docker.sock: run 'sudo usermod -aG docker $(id -un)' and log in again"
        fi
        die "dockerd runs but 'docker info' fails: see 'docker info' and $DOCKERD_LOG"
    fi
    command -v dockerd >/dev/null 2>&1 || die "dockerd is not installed: apt-get install docker.io"

    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        say "starting docker with systemctl"
        as_root systemctl start docker || die "'systemctl start docker' failed: see 'journalctl -u docker'"
    else
        say "starting dockerd in the background (log: $DOCKERD_LOG)"
        as_root sh -c "nohup setsid dockerd >>'$DOCKERD_LOG' 2>&1 </dev/null &" \
            || die "could not start dockerd: see $DOCKERD_LOG"
    fi
    [ "$DRY_RUN" -eq 1 ] && { say "dry run: not waiting for dockerd"; return 0; }

    local deadline=$((SECONDS + DOCKERD_TIMEOUT_S))
    until docker_answers; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$DOCKERD_LOG" >&2 2>/dev/null || true
            die "dockerd did not answer within ${DOCKERD_TIMEOUT_S}s: see $DOCKERD_LOG (last lines above)"
        fi
        sleep 0.5
    done
    say "docker engine answers"
}

# --- python venv -----------------------------------------------------------------------------

ensure_venv() {
    command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found: install python3 (>= 3.11) or set PYTHON"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1), agentvisor needs >= 3.11: set PYTHON to a newer one"

    # The dev install holds the runtime one: after it, plain setup has nothing to do.
    local stamp="$DEV_STAMP" extras="[dev]" what="agentvisor and its dev dependencies"
    if [ "$DEV" -eq 0 ]; then
        stamp="$STAMP" extras="" what="agentvisor"
    fi
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c '' 2>/dev/null \
        && { fresh "$stamp" || fresh "$DEV_STAMP"; }; then
        say "venv up to date ($VENV)"
        return 0
    fi
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
        say "creating $VENV"
        rm -rf "$VENV"
        as_user "$PYTHON" -m venv "$VENV" \
            || die "'$PYTHON -m venv' failed: install python3-venv"
    fi
    say "installing $what into $VENV"
    as_user "$VENV/bin/pip" install --quiet --disable-pip-version-check -e "${ROOT}${extras}" \
        || die "pip install -e '.${extras}' failed: see the pip output above"
    as_user touch "$STAMP"
    [ "$DEV" -eq 0 ] || as_user touch "$DEV_STAMP"
}

fresh() { [ -f "$1" ] && [ "$1" -nt "$ROOT/pyproject.toml" ]; }

# --- docker compose for the compose test -------------------------------------------------------
# tests/integration/test_compose.py runs compose/docker-compose.yml with the `docker compose`
# plugin, or else Debian's `docker-compose` (v1; bookworm has no plugin package). Without
# recommends: those would pull docker.io onto a machine that has Docker's own docker-ce.
ensure_compose() {
    if docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 \
        || ! command -v dpkg-query >/dev/null 2>&1; then
        return 0
    fi
    say "installing docker-compose (the compose test)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        || die "apt-get update failed: check the network and /etc/apt/sources.list"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        docker-compose || die "apt-get install docker-compose failed: see the apt output above"
}

# `agentvisor` on PATH, so that the README's commands work in a new shell: a symlink to the
# venv's command. A file of that name that is not such a link is left alone.
ensure_cli_link() {
    local dir="${AGENTVISOR_BIN_DIR:-}"
    if [ -z "$dir" ]; then
        if [ "$(id -u)" -eq 0 ] && [ -z "${SUDO_USER:-}" ]; then
            dir=/usr/local/bin
        else
            dir="$(as_user sh -c 'echo "$HOME"')/.local/bin"
        fi
    fi
    [ "$dir" = none ] && return 0
    local link="$dir/agentvisor" target="$VENV/bin/agentvisor"
    if [ -e "$link" ] && [ ! -L "$link" ]; then
        say "not linking $link: a file of that name is there; use $target"
        return 0
    fi
    if [ "$(readlink "$link" 2>/dev/null || true)" != "$target" ]; then
        as_user mkdir -p "$dir" && as_user ln -sfn "$target" "$link" \
            || { say "could not link $link; use $target"; return 0; }
        say "linked $link -> $target"
    fi
    case ":$PATH:" in
        *":$dir:"*) ;;
        *) say "$dir is not on your PATH: run  export PATH=\"$dir:\$PATH\"  (or add it to ~/.profile)" ;;
    esac
}

install_packages
ensure_docker
[ "$DEV" -eq 0 ] || ensure_compose
ensure_venv
ensure_cli_link
say "ready"
