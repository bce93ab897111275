#!/usr/bin/env bash
# A single-node KRaft Kafka broker (broker + controller in one JVM) on loopback, from the classpath
# scripts/setup-kafka.sh assembles. Data and log live in KAFKA_DIR (default $KAPPAFLOW_CACHE/kafka/run).
#   bash scripts/kafka.sh start   # in the background; waits until it listens on 127.0.0.1:KAFKA_PORT (9092)
#   bash scripts/kafka.sh stop
#   bash scripts/kafka.sh run     # in the foreground (what the pytest fixture starts)
source "$(dirname "$0")/common.sh"
LIB="$KAPPAFLOW_CACHE/kafka/$KAFKA_VERSION/lib"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_DIR="${KAFKA_DIR:-$KAPPAFLOW_CACHE/kafka/run}"
KAFKA_PARTITIONS="${KAFKA_PARTITIONS:-2}"
JAVA=(java -Xms128m -Xmx384m -cp "$LIB/*" "-Dlog4j.configuration=file:$KAFKA_DIR/log4j.properties")

configure() {
  [ -f "$LIB/kafka_2.13-$KAFKA_VERSION.jar" ] || { echo "kafka: not installed, run scripts/setup-kafka.sh" >&2; exit 1; }
  mkdir -p "$KAFKA_DIR"
  cat > "$KAFKA_DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=$KAFKA_PARTITIONS
auto.create.topics.enable=true
# No time-based retention: replays of old events carry their event time as the record timestamp,
# and the default 7-day retention would delete them within minutes (log.retention.check.interval.ms).
log.retention.ms=-1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
  cat > "$KAFKA_DIR/log4j.properties" <<PROPS
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$KAFKA_DIR/broker.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
PROPS
  # KRaft needs formatted storage; a data dir formatted before (same config) is reused as it is.
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    "${JAVA[@]}" kafka.tools.StorageTool format --ignore-formatted \
        -t "$("${JAVA[@]}" kafka.tools.StorageTool random-uuid)" -c "$KAFKA_DIR/server.properties" >/dev/null
  fi
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; }

case "${1:-}" in
  run)
    configure
    exec "${JAVA[@]}" kafka.Kafka "$KAFKA_DIR/server.properties"
    ;;
  start)
    if listening; then echo "kafka: something already listens on 127.0.0.1:$KAFKA_PORT" >&2; exit 1; fi
    configure
    nohup "${JAVA[@]}" kafka.Kafka "$KAFKA_DIR/server.properties" >"$KAFKA_DIR/stdout.log" 2>&1 &
    echo $! >"$KAFKA_DIR/kafka.pid"
    for _ in $(seq 1 120); do
      if listening; then echo "kafka: listening on 127.0.0.1:$KAFKA_PORT (data in $KAFKA_DIR)"; exit 0; fi
      kill -0 "$(cat "$KAFKA_DIR/kafka.pid")" 2>/dev/null || { echo "kafka: the broker exited, see $KAFKA_DIR/broker.log" >&2; exit 1; }
      sleep 0.5
    done
    echo "kafka: not listening on 127.0.0.1:$KAFKA_PORT after 60s, see $KAFKA_DIR/broker.log" >&2; exit 1
    ;;
  stop)
    if [ -f "$KAFKA_DIR/kafka.pid" ]; then
      pid="$(cat "$KAFKA_DIR/kafka.pid")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      rm -f "$KAFKA_DIR/kafka.pid"
    fi
    ;;
  *)
    echo "usage: $0 start|stop|run" >&2; exit 2
    ;;
esac
