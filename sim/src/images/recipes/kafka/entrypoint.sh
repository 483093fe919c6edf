#!/bin/bash
# Same interface as the official apache/kafka image: every KAFKA_* variable
# becomes a broker property (KAFKA_NODE_ID -> node.id; `__` -> `_`, `___` -> `-`),
# CLUSTER_ID formats the storage on first start. One container spec serves
# both image sets.
set -euo pipefail

: "${CLUSTER_ID:?CLUSTER_ID must be set}"
conf=/opt/kafka/config/server.properties
: > "$conf"
for var in $(compgen -e); do
  case "$var" in
    KAFKA_HEAP_OPTS|KAFKA_JVM_PERFORMANCE_OPTS|KAFKA_OPTS|KAFKA_LOG4J_OPTS) ;;
    KAFKA_*)
      key=$(printf '%s' "${var#KAFKA_}" | tr 'A-Z' 'a-z' | sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')
      printf '%s=%s\n' "$key" "${!var}" >> "$conf"
      ;;
  esac
done

cp="/opt/kafka/libs/*"
log="-Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties"
# A one-shot JVM: C1 only and the serial collector start it in a fraction of
# the time, which matters when six nodes format at once on two cores.
java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto $log -cp "$cp" kafka.tools.StorageTool format --ignore-formatted -t "$CLUSTER_ID" -c "$conf" >/dev/null

# Prometheus's view of the node: the JMX exporter agent on :9404, keeping
# only the replica manager's, the partitions' and the controller's gauges.
metrics=""
agent=/opt/kafka/jmx/jmx_prometheus_javaagent.jar
if [ -f "$agent" ]; then metrics="-javaagent:$agent=9404:/opt/kafka/jmx/kafka.yml"; fi

# shellcheck disable=SC2086
exec java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m} \
  ${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -Djava.awt.headless=true} \
  ${KAFKA_OPTS:-} $metrics $log -cp "$cp" kafka.Kafka "$conf"
