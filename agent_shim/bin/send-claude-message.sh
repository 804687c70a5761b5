#!/usr/bin/env bash
# Old tool's interface: send-claude-message.sh TARGET "MESSAGE"
# TARGET is a role or an old tmux target (session:window); `agent` maps it to a role.
set -euo pipefail
agent="$(dirname "$(readlink -f "$0")")/agent"
if [ "$#" -ne 2 ]; then
    echo "usage: send-claude-message.sh TARGET \"MESSAGE\"" >&2
    exit 2
fi
exec "$agent" send "$1" "$2"
