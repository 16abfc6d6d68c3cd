#!/usr/bin/env bash
# Entrypoint of the `cluster` profile's RabbitMQ nodes: installs the shared Erlang cookie from the
# `rabbitmq_erlang_cookie` Compose secret, then hands over to the image's own entrypoint.
#
# The cookie cannot be mounted in place: Erlang refuses a cookie file that others can read, and a
# Compose secret keeps the mode of its file on the host (Compose without Swarm ignores `mode`). So it
# is copied, as root (the image's default user), into the data directory, owned by rabbitmq and
# readable by it alone; `rabbitmq-diagnostics` in the health check finds it there too ($HOME).
set -euo pipefail

secret=/run/secrets/rabbitmq_erlang_cookie
cookie=/var/lib/rabbitmq/.erlang.cookie

if [ ! -s "$secret" ]; then
	echo >&2 "cluster-entrypoint: $secret is missing or empty (the rabbitmq_erlang_cookie secret)"
	exit 1
fi
umask 077
tr -d '[:space:]' < "$secret" > "$cookie.new"
chown rabbitmq:rabbitmq "$cookie.new"
chmod 0400 "$cookie.new"
mv -f "$cookie.new" "$cookie"

exec docker-entrypoint.sh "$@"
