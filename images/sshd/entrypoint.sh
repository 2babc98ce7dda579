#!/bin/sh
# nicompute-entrypoint: the entrypoint of the image a nicompute miner starts for each allocation.
#
# The miner uploads, before the container's first start (Docker's archive API, so nothing shows
# up in `docker inspect`):
#   /run/nicompute/chpasswd       one line `root:<password>`, mode 0600; applied, then deleted
#   /root/.ssh/authorized_keys    the renter's public keys (may be absent)
# This script applies them and execs sshd in the foreground, logging to stderr (`docker logs`).
# It runs again on every restart; by then the password file is gone and nothing changes.
#
# Parked start (the image's label io.nicompute.await-credentials=1 promises it): a warm container
# created with NICOMPUTE_AWAIT_CREDENTIALS=1 is started before anyone allocates it and waits here,
# paused by the miner, running nothing else: no sshd, no keys made. An allocation uploads the
# credentials and then /run/nicompute/go (the archive's last entry) and unpauses it; from then on
# it is an ordinary first start. /var/lib/nicompute/provisioned makes a restart skip the wait.
set -eu

if [ "${NICOMPUTE_AWAIT_CREDENTIALS:-}" = 1 ] && [ ! -e /var/lib/nicompute/provisioned ]; then
    while [ ! -e /run/nicompute/go ]; do
        sleep 0.005
    done
    rm -f /run/nicompute/go
    mkdir -p /var/lib/nicompute
    : >/var/lib/nicompute/provisioned
fi

# Host keys are deleted from the image at build time, so each container gets its own.
ssh-keygen -A >/dev/null

mkdir -p /run/sshd
chmod 0755 /run/sshd

if [ -f /run/nicompute/chpasswd ]; then
    if ! chpasswd </run/nicompute/chpasswd; then
        rm -f /run/nicompute/chpasswd
        echo "nicompute-entrypoint: chpasswd failed; refusing to start sshd" >&2
        exit 1
    fi
    rm -f /run/nicompute/chpasswd
    rmdir /run/nicompute 2>/dev/null || true
fi

# sshd ignores authorized_keys whose file or directory is group/world writable or not root's.
if [ -d /root/.ssh ]; then
    chown -R root:root /root/.ssh
    chmod 0700 /root/.ssh
    if [ -f /root/.ssh/authorized_keys ]; then
        chmod 0600 /root/.ssh/authorized_keys
    fi
fi

exec /usr/sbin/sshd -D -e "$@"
