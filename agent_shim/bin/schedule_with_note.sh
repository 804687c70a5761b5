#!/usr/bin/env bash
# Old tool's interface: schedule_with_note.sh MINUTES "NOTE" [TARGET]
# TARGET was a tmux target (session:window); `agent` maps it to a role. No TARGET: yourself.
set -euo pipefail
agent="$(dirname "$(readlink -f "$0")")/agent"
if [ "$#" -lt 2 ] || [ "$#" -gt 3 ]; then
    echo "usage: schedule_with_note.sh MINUTES \"NOTE\" [TARGET]" >&2
    exit 2
fi
if [ "$#" -eq 3 ] && [ -n "$3" ]; then
    exec "$agent" checkin "$1" "$2" --to "$3"
fi
exec "$agent" checkin "$1" "$2"
