#!/bin/sh
# Server-group messaging from a shell inside the VM, through the nfvha guest
# library's local socket API (docs/server-group.md). Needs socat.
#
#   group.sh broadcast 'some text'   -> {"ok":true}
#   group.sh status                  -> {"ok":true,"members":[...],"complete":true}
#   group.sh listen                  -> one JSON line per broadcast / notification
set -eu
SOCK=${NFVHA_GROUP_SOCKET:-/run/nfvha/group.sock}

json_string() {  # JSON-quote $1 (escapes \ and "; the library refuses newlines)
    printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

case "${1:-}" in
broadcast)
    printf '{"op":"broadcast","data":%s}\n' "$(json_string "$2")" |
        socat -t 5 - "UNIX-CONNECT:$SOCK" | head -n 1 ;;
status)
    printf '{"op":"status","timeout":5}\n' |
        socat -t 10 - "UNIX-CONNECT:$SOCK" | head -n 1 ;;
listen)
    { printf '{"op":"subscribe"}\n'; cat; } |
        socat - "UNIX-CONNECT:$SOCK" | tail -n +2 ;;
*)
    echo "usage: $0 broadcast DATA | status | listen" >&2; exit 2 ;;
esac
