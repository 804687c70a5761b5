#!/bin/sh
# Give the uid the sandbox runs as (--user UID:GID) a name and HOME if the image does not know it,
# then run the command (supervisord by default).
#
# The root filesystem is read-only at run time: the entry goes to /tmp/agentvisor/passwd (and
# group), which libnss-extrausers reads after /etc/passwd.
set -eu

uid="$(id -u)"
gid="$(id -g)"
dir=/tmp/agentvisor

if mkdir -p "$dir" 2>/dev/null && [ -w "$dir" ]; then
    : >"$dir/passwd"
    : >"$dir/group"
    awk -F: -v id="$uid" '$3 == id { found = 1 } END { exit !found }' /etc/passwd \
        || echo "agent:x:$uid:$gid:agent:/home/agent:/bin/bash" >"$dir/passwd"
    awk -F: -v id="$gid" '$3 == id { found = 1 } END { exit !found }' /etc/group \
        || echo "agent:x:$gid:" >"$dir/group"
else
    echo "agentvisor-entrypoint: $dir is not writable, so uid $uid may have no user name" >&2
fi

# supervisord waits one poll interval (1 s) before it starts its programs; a first request on its
# control socket ends that wait at once, which takes about a second off a sandbox's start.
if [ "${1:-}" = supervisord ] && command -v supervisorctl >/dev/null 2>&1; then
    (
        i=0
        while [ "$i" -lt 100 ] && [ ! -S /tmp/supervisor.sock ]; do
            sleep 0.01
            i=$((i + 1))
        done
        supervisorctl --configuration /etc/supervisor/supervisord.conf pid >/dev/null 2>&1 || true
    ) &
fi

exec "$@"
