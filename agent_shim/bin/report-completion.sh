#!/usr/bin/env bash
# Old tool's interface: report-completion.sh ROLE "MESSAGE"
# Reports the task finished to the orchestrator. ROLE is accepted for compatibility only:
# who reports is known from the agent's token.
set -euo pipefail
agent="$(dirname "$(readlink -f "$0")")/agent"
if [ "$#" -ne 2 ]; then
    echo "usage: report-completion.sh ROLE \"MESSAGE\"" >&2
    exit 2
fi
exec "$agent" done "$2"
