#!/bin/sh
# Like the official redis image: `redis-server ...` listens on every interface without protected mode.
set -eu
if [ "${1:-}" = redis-server ]; then
    shift
    exec redis-server --protected-mode no --bind '0.0.0.0' "$@"
fi
exec "$@"
