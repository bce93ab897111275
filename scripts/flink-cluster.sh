#!/usr/bin/env bash
# A local standalone Flink cluster (one JobManager, one TaskManager with two slots), every port on
# 127.0.0.1, from the distribution scripts/setup-flink.sh unpacked.
#   scripts/flink-cluster.sh start|stop|status|kill-taskmanager|start-taskmanager
# Ports: FLINK_REST_PORT (8081), FLINK_RPC_PORT (6123); run state in $KAPPAFLOW_CACHE/flink/cluster-<rest port>.
# FLINK_TM_MEMORY (4096m): the TaskManager's process memory. A replay keeps its dedup and window state
# on the TaskManager's heap: with 1728m (512 MiB of heap) a replay of the 1M-event benchmark sample
# died of OutOfMemoryError halfway; with 4096m it finished (docs/benchmarks.md).
# Pipelines: --runner=FlinkRunner --flink_master=127.0.0.1:$FLINK_REST_PORT
source "$(dirname "$0")/common.sh"
REST_PORT="${FLINK_REST_PORT:-8081}"
RPC_PORT="${FLINK_RPC_PORT:-6123}"
SLOTS="${FLINK_TASK_SLOTS:-2}"
TM_MEMORY="${FLINK_TM_MEMORY:-4096m}"
export FLINK_HOME="$KAPPAFLOW_CACHE/flink/dist-$FLINK_VERSION"
RUN="$KAPPAFLOW_CACHE/flink/cluster-$REST_PORT"
export FLINK_CONF_DIR="$RUN/conf" FLINK_LOG_DIR="$RUN/log" FLINK_PID_DIR="$RUN"
[ -f "$FLINK_HOME/.complete" ] || { echo "flink-cluster: Flink is not installed; run \`make setup-flink\`" >&2; exit 1; }

configure() {
  mkdir -p "$FLINK_CONF_DIR" "$FLINK_LOG_DIR"
  cp "$FLINK_HOME"/conf/log4j*.properties "$FLINK_CONF_DIR/"
  # Flink's own JVM options for Java 17 (--add-opens ...), from the distribution's config: without
  # them a checkpoint of Kryo-serialized state fails (KafkaIO's offset commit: "module java.base
  # does not opens java.util").
  local java_opts
  java_opts="$(sed -n 's/^ *all: *//p' "$FLINK_HOME/conf/config.yaml" | head -1)"
  # Flat keys are valid YAML for Flink 1.19's config.yaml. Loopback only.
  cat > "$FLINK_CONF_DIR/config.yaml" <<YAML
jobmanager.rpc.address: 127.0.0.1
jobmanager.rpc.port: $RPC_PORT
jobmanager.bind-host: 127.0.0.1
jobmanager.memory.process.size: 1024m
taskmanager.host: 127.0.0.1
taskmanager.bind-host: 127.0.0.1
taskmanager.numberOfTaskSlots: $SLOTS
taskmanager.memory.process.size: $TM_MEMORY
parallelism.default: 1
rest.address: 127.0.0.1
rest.bind-address: 127.0.0.1
rest.port: $REST_PORT
blob.server.port: 0
taskmanager.rpc.port: 0
taskmanager.data.port: 0
# A restarted TaskManager must be able to take the job back quickly.
heartbeat.timeout: 10000
heartbeat.interval: 2000
# Checkpoints and savepoints on disk: Flink's default keeps checkpoints in the JobManager's memory,
# at most 5 MiB of state per task, and a long replay's dedup and window state outgrew that after
# ~20k of 200k events ("Size of the state is larger than the maximum permitted memory-backed
# state"), failing the job at every checkpoint.
state.checkpoints.dir: file://$RUN/checkpoints
state.savepoints.dir: file://$RUN/savepoints
# The REST API's job metrics (what the end-of-replay watch and the tests read) at most 1 s old
# (Flink's default: 10 s).
metrics.fetcher.update-interval: 1000
env.java.opts.all: $java_opts
YAML
}

wait_ready() {  # until the REST API lists the wanted number of TaskManagers (max 60 s)
  local want="$1"
  for _ in $(seq 120); do
    if curl -sf "http://127.0.0.1:$REST_PORT/taskmanagers" 2>/dev/null | python3 -c \
        "import json,sys; sys.exit(0 if len(json.load(sys.stdin)['taskmanagers']) >= $want else 1)" 2>/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  echo "flink-cluster: not ready after 60 s; logs in $FLINK_LOG_DIR" >&2
  return 1
}

running() { curl -sf "http://127.0.0.1:$REST_PORT/overview" >/dev/null 2>&1; }

case "${1:-}" in
  start)
    if running; then echo "flink-cluster: already running on 127.0.0.1:$REST_PORT"; exit 0; fi
    configure
    "$FLINK_HOME/bin/jobmanager.sh" start >/dev/null
    "$FLINK_HOME/bin/taskmanager.sh" start >/dev/null
    wait_ready 1
    echo "flink-cluster: ready, --flink_master=127.0.0.1:$REST_PORT"
    ;;
  stop)
    "$FLINK_HOME/bin/taskmanager.sh" stop-all >/dev/null 2>&1 || true
    "$FLINK_HOME/bin/jobmanager.sh" stop-all >/dev/null 2>&1 || true
    echo "flink-cluster: stopped (127.0.0.1:$REST_PORT)"
    ;;
  status)
    running && curl -s "http://127.0.0.1:$REST_PORT/overview" && echo || { echo "not running"; exit 1; }
    ;;
  kill-taskmanager)  # the hard way: SIGKILL, as a crashed machine would
    for pid in $(cat "$FLINK_PID_DIR"/*taskexecutor*.pid 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    rm -f "$FLINK_PID_DIR"/*taskexecutor*.pid
    ;;
  start-taskmanager)
    "$FLINK_HOME/bin/taskmanager.sh" start >/dev/null
    wait_ready 1
    ;;
  *)
    echo "usage: $0 start|stop|status|kill-taskmanager|start-taskmanager" >&2; exit 2
    ;;
esac
