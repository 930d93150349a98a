#!/bin/sh
# Installed by the static-sh buildpack: serves the app's files over HTTP on
# $PORT. /instance answers INSTANCE_INDEX, so clients can tell the app's
# instances apart (each runs in its own container).
set -eu
root=${STATIC_SH_ROOT:-$HOME}
port=${PORT:-8080}
echo "${INSTANCE_INDEX:-0}" > "$root/instance"
echo "static-sh: instance ${INSTANCE_INDEX:-0} serving $root on port $port"
exec httpd -f -p "$port" -h "$root"
