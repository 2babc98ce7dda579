#!/usr/bin/env bash
# Builds the image the docker runtime starts for each allocation, without any container
# registry: a Debian bookworm root made by debootstrap from Debian's package mirror, plus
# images/sshd/ (entrypoint and sshd config), imported into the local Docker daemon.
#
#   scripts/build-ssh-image.sh [--force] [IMAGE]      (IMAGE default: nicompute/sshd:bookworm)
#
# Idempotent: does nothing when IMAGE already exists and was built from the same images/sshd/
# files and script (its io.nicompute.image.source label), unless --force. Needs root (debootstrap)
# and a Docker daemon (scripts/docker-up.sh starts one). The first build takes minutes; progress
# goes to stderr. Environment: NICOMPUTE_DEBIAN_MIRROR (default: debootstrap's own),
# NICOMPUTE_BUILD_DIR (default target/sshd-image; deleted after the import).
set -euo pipefail

log() { echo "build-ssh-image: $*" >&2; }

FORCE=0
IMAGE="nicompute/sshd:bookworm"
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,11p' "$0" >&2; exit 0 ;;
        -*) log "unknown option $arg"; exit 2 ;;
        *) IMAGE="$arg" ;;
    esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SRC="$ROOT/images/sshd"
MIRROR="${NICOMPUTE_DEBIAN_MIRROR:-}"
WORK="${NICOMPUTE_BUILD_DIR:-$ROOT/target/sshd-image}"

case "$WORK" in
    ""|/|"$ROOT"|"$HOME") log "refusing NICOMPUTE_BUILD_DIR=$WORK (it is deleted after the build)"; exit 2 ;;
esac

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! docker info >/dev/null 2>&1; then
    log "no Docker daemon answers; run scripts/docker-up.sh first"
    exit 1
fi

# What the image is built from: a changed entrypoint, sshd config or script means a rebuild.
SOURCE=$(cat "$SRC/entrypoint.sh" "$SRC/sshd_config" "$0" | sha256sum | cut -c1-16)
if [ "$FORCE" -eq 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    built_from=$(docker image inspect --format '{{ index .Config.Labels "io.nicompute.image.source" }}' "$IMAGE" 2>/dev/null || true)
    if [ "$built_from" = "$SOURCE" ]; then
        log "$IMAGE already exists, built from these sources; nothing to do (--force rebuilds it)"
        exit 0
    fi
    log "$IMAGE was built from other sources (${built_from:-unlabelled}); rebuilding it"
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap with apt-get"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2
fi

start=$(date +%s)
ROOTFS="$WORK/rootfs"
cleanup() {
    # debootstrap may leave proc/sys mounted when it fails half way.
    for m in proc sys dev/pts dev; do
        if mountpoint -q "$ROOTFS/$m" 2>/dev/null; then $SUDO umount -l "$ROOTFS/$m" || true; fi
    done
    $SUDO rm -rf "$WORK"
}
trap cleanup EXIT
cleanup
mkdir -p "$WORK"

log "debootstrap bookworm (minbase + openssh-server) from ${MIRROR:-the default mirror} into $ROOTFS; this takes a few minutes"
if ! $SUDO debootstrap --variant=minbase --include=openssh-server,ca-certificates \
        bookworm "$ROOTFS" ${MIRROR:+"$MIRROR"} >"$WORK/debootstrap.out" 2>&1; then
    log "debootstrap failed; its last lines:"
    tail -n 30 "$WORK/debootstrap.out" >&2 || true
    tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    exit 1
fi
log "debootstrap done after $(( $(date +%s) - start )) s"

# The nicompute entrypoint contract (images/sshd/README.md).
$SUDO install -m 0755 -o root -g root "$SRC/entrypoint.sh" "$ROOTFS/usr/local/bin/nicompute-entrypoint"
$SUDO install -m 0644 -o root -g root "$SRC/sshd_config" "$ROOTFS/etc/ssh/sshd_config.d/nicompute.conf"
# Every container must get its own host keys (the entrypoint generates them on first start).
$SUDO rm -f "$ROOTFS"/etc/ssh/ssh_host_*
# No keys until the miner uploads them. Root's password stays debootstrap's `*` (matches nothing)
# until the entrypoint applies the miner's.
$SUDO rm -rf "$ROOTFS/root/.ssh"
# Smaller image: package caches and lists are not needed at run time.
$SUDO rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS/debootstrap"
$SUDO truncate -s 0 "$ROOTFS/etc/machine-id" 2>/dev/null || true

old_id=$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
log "importing into Docker as $IMAGE"
# Docker provides /dev, /proc, /sys, /etc/hostname, /etc/hosts and /etc/resolv.conf itself.
$SUDO tar -C "$ROOTFS" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . \
    | docker import \
        --change 'ENTRYPOINT ["/usr/local/bin/nicompute-entrypoint"]' \
        --change 'EXPOSE 22' \
        --change 'LABEL io.nicompute.image=sshd' \
        --change 'LABEL io.nicompute.await-credentials=1' \
        --change "LABEL io.nicompute.image.source=$SOURCE" \
        --message "nicompute sshd image (debootstrap bookworm minbase + openssh-server)" \
        - "$IMAGE" >/dev/null

new_id=$(docker image inspect --format '{{.Id}}' "$IMAGE")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    # The replaced image is now untagged; drop it unless containers still use it.
    docker image rm "$old_id" >/dev/null 2>&1 || log "kept the previous image $old_id (containers use it)"
fi
size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE ($(( size / 1024 / 1024 )) MiB) in $(( $(date +%s) - start )) s"
