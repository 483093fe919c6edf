#!/bin/sh
# Starts one PostgreSQL exporter per database node named in VOYAGER_PG_NODES
# ("name=address name=address ..."; the n-th listens on 127.0.0.1:9187+n),
# then becomes Prometheus with the arguments given. The exporters log in with
# VOYAGER_PG_USER and the password in the file VOYAGER_PG_PASSWORD_FILE, so
# no password is in the environment or on a command line. Likewise
# kube-state-metrics reads its token from a file its kubeconfig names.
set -eu

n=0
for node in ${VOYAGER_PG_NODES:-}; do
  name=${node%%=*}
  addr=${node#*=}
  port=$((9187 + n))
  n=$((n + 1))
  password=$(cat "$VOYAGER_PG_PASSWORD_FILE")
  DATA_SOURCE_NAME="host=$addr port=5432 user=$VOYAGER_PG_USER password=$password dbname=postgres sslmode=disable connect_timeout=2" \
    prometheus-postgres-exporter --web.listen-address="127.0.0.1:$port" \
    --disable-default-metrics --disable-settings-metrics \
    --extend.query-path=/etc/voyager/pg-queries.yaml \
    --log.level=warn >"/tmp/pg-exporter-$name.log" 2>&1 &
done

# kube-state-metrics, where the stack runs Kubernetes: its arguments name
# only files and local ports, so splitting them on spaces is safe once
# globbing is off (the label allowlist has brackets).
if [ -n "${VOYAGER_KSM_ARGS:-}" ]; then
  set -f
  # shellcheck disable=SC2086
  kube-state-metrics $VOYAGER_KSM_ARGS >/tmp/kube-state-metrics.log 2>&1 &
fi

exec prometheus "$@"
