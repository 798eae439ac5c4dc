#!/bin/sh
# Entrypoint of the resilient worker image (runs under tini; see workers/Dockerfile).
#
#   (no arguments)        resilient supervisor --workers $RESILIENT_WORKERS $RESILIENT_JOB_MODULES
#   -OPTION ...           the same, with these options added (e.g. --lease-ttl 20)
#   resilient ARGS...     resilient ARGS...
#   sh|bash|python ...    that program, for debugging
#   ARGS...               resilient ARGS... (e.g. `supervisor`, `enqueue NAME '[args]'`, `status`)
#
# RESILIENT_JOB_MODULES is a space-separated list of importable job modules.
# The last step is always `exec`, so the command is tini's direct child and gets its signals.
set -eu
set -f  # module names are split on spaces, never globbed

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    # shellcheck disable=SC2086 # splitting RESILIENT_JOB_MODULES into words is intended
    set -- supervisor --workers "${RESILIENT_WORKERS:-2}" "$@" ${RESILIENT_JOB_MODULES:-examples.squares}
fi

case "$1" in
    resilient) shift ;;
    sh | bash | python | python3) exec "$@" ;;
esac
exec resilient "$@"
