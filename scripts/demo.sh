#!/usr/bin/env bash
# The first command: sets up what a fresh machine lacks, builds nicompute, and runs the main
# job on a devnet — a chain, four miners with simulated GPUs and a renter on this machine:
# devnet up → list_r → a --gpu_type h100 --gpu_size 80 → a command over SSH in the allocation
# → list_a → d → devnet down. Exits 0 only if every step did what it says.
#
#   scripts/demo.sh [--local | --docker]
#
#   (default)  allocations run in Docker containers when Docker can be used or set up here (as
#              root: installs docker.io, starts dockerd, builds the base image once — minutes),
#              in the local runtime (an SSH server per allocation, no isolation) otherwise.
#   --local    never touch Docker.
#   --docker   Docker or fail.
#
# Needs a Rust toolchain (cargo). Progress for every long step goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*" >&2; }

MODE=auto
for arg in "$@"; do
    case "$arg" in
        --local) MODE=local ;;
        --docker) MODE=docker ;;
        -h|--help) sed -n '2,15p' "$0" >&2; exit 0 ;;
        *) echo "demo.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done

if ! command -v cargo >/dev/null 2>&1; then
    echo "demo.sh: cargo not found. Install a Rust toolchain (1.85 or newer, e.g. with rustup) and run this again." >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! command -v cc >/dev/null 2>&1; then
    # SQLite (bundled) and ring compile C code.
    if command -v apt-get >/dev/null 2>&1 && { [ -z "$SUDO" ] || sudo -n true 2>/dev/null; }; then
        log "installing a C compiler (build-essential)"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends build-essential >&2
    else
        echo "demo.sh: no C compiler (cc); install gcc or clang and run this again." >&2
        exit 1
    fi
fi

log "building nicompute (release; the first build takes several minutes)"
cargo build --release --locked -p nicompute

RUNTIME=local
if [ "$MODE" != local ]; then
    can_root=0
    if [ -z "$SUDO" ] || sudo -n true 2>/dev/null; then can_root=1; fi
    if docker info >/dev/null 2>&1 || [ "$can_root" -eq 1 ]; then
        log "Docker: a daemon and the base image nicompute/sshd:bookworm (the first image build takes minutes)"
        if scripts/docker-up.sh && scripts/build-ssh-image.sh; then
            RUNTIME=docker
        elif [ "$MODE" = docker ]; then
            echo "demo.sh: Docker could not be set up (see above)" >&2
            exit 1
        else
            log "Docker could not be set up (see above): the demo uses the local runtime"
        fi
    elif [ "$MODE" = docker ]; then
        echo "demo.sh: --docker needs a running Docker daemon or root to start one" >&2
        exit 1
    else
        log "no Docker daemon and no root to start one: the demo uses the local runtime"
    fi
fi

log "nicompute devnet demo --runtime $RUNTIME"
exec target/release/nicompute devnet demo --runtime "$RUNTIME"
