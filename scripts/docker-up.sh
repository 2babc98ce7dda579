#!/usr/bin/env bash
# Makes sure a Docker daemon answers on this machine, for the docker runtime's integration tests
# and for developers. Idempotent: does nothing when `docker info` already works.
#
#   scripts/docker-up.sh
#
# When no daemon answers it installs Debian's docker.io (if dockerd is missing), starts dockerd
# in the background (log: ${NICOMPUTE_DOCKERD_LOG:-/tmp/nicompute-dockerd.log}) and waits up
# to 60 s for its socket. It also installs the SSH clients the tests drive (ssh, sshpass), and
# openssl and curl for the API's TLS test.
# Needs root (or sudo) on Debian/Ubuntu. Progress goes to stderr.
set -euo pipefail

log() { echo "docker-up: $*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_updated=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found: install $* by hand"
        return 1
    fi
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        apt_updated=1
    fi
    log "apt-get install $*"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# The tests log in with the system SSH client; sshpass feeds it the password.
missing=()
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v sshpass >/dev/null 2>&1 || missing+=(sshpass)
# The API's mutual-TLS test makes its certificates with openssl and calls the server with curl.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install $(printf '%s\n' "${missing[@]}" | sort -u)
fi

if docker info >/dev/null 2>&1; then
    log "a Docker daemon already answers"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    # docker.io brings dockerd, containerd, runc, iptables and the docker CLI.
    apt_install docker.io
fi

LOG="${NICOMPUTE_DOCKERD_LOG:-/tmp/nicompute-dockerd.log}"
SOCK="/var/run/docker.sock"
if [ -n "${DOCKER_HOST:-}" ]; then
    case "$DOCKER_HOST" in
        unix://*) SOCK="${DOCKER_HOST#unix://}" ;;
        *) log "DOCKER_HOST=$DOCKER_HOST is not a unix socket and does not answer; not starting a daemon"; exit 1 ;;
    esac
fi

if pgrep -x dockerd >/dev/null 2>&1; then
    log "dockerd is running but does not answer yet; waiting for it"
else
    log "starting dockerd (log: $LOG)"
    # setsid + nohup: the daemon outlives this script and the shell that ran it.
    $SUDO setsid nohup dockerd --host "unix://$SOCK" >>"$LOG" 2>&1 </dev/null &
fi

for _ in $(seq 1 60); do
    if docker -H "unix://$SOCK" info >/dev/null 2>&1; then
        log "Docker daemon is up ($(docker -H "unix://$SOCK" version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
        exit 0
    fi
    sleep 1
done

log "dockerd did not answer on $SOCK within 60 s; the last lines of $LOG:"
tail -n 30 "$LOG" >&2 || true
exit 1
