#!/usr/bin/env bash
# Runs a real Apache Kafka (KRaft, combined broker+controller nodes; one by
# default, or a cluster of KAFKA_NODES) for integration tests, from the Kafka
# server jars on Maven Central and the machine's Java 17. No tarball, no
# container.
#
#   scripts/kafka.sh start|stop|status|fetch|restart|crash [N]|kill9 N|start-node N|controller
#
# fetch downloads the jars only. restart stops node 1 (SIGTERM, controlled
# shutdown) and starts it again on the same data and cluster id, so every
# topic, message and committed offset survives: a broker restart for
# fault-injection tests (cmd/chaos). crash N does the same for node N (default
# 1) with kill -9 and KAFKA_DOWN_SECONDS (0) of outage; kill9 N and start-node N
# are its two halves. controller prints the node id of the active KRaft
# controller. start and stop always begin afresh.
#
# Environment:
#   KAFKA_PORT             client listener on 127.0.0.1 (default 19092)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener (default KAFKA_PORT+1)
#   KAFKA_VERSION          org.apache.kafka:kafka_2.13 version (default: pom.xml)
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to be ready (default 90)
#   KAFKA_HEAP             JVM heap per node (default 768m)
#   KAFKA_GC               the JVM's collector flags (default -XX:+UseG1GC)
#   KAFKA_PROXIED          BIND:ADVERTISED, a second listener for a proxy (below)
#   KAFKA_NODES            nodes in the cluster (default 1). Node N listens on
#                          KAFKA_PORT + 2(N-1), its controller on that + 1;
#                          with 3 or more, topics default to replication factor
#                          3 and min.insync.replicas 2
#
# Everything lives under .cache/kafka: libs/ (jars, downloaded once per
# version), data-<port>/ (log dirs, wiped on stop and on a fresh start) and
# run-<port>/ (config, logs, gc.log: the JVM's GC pauses, pid file); node N > 1 of a cluster in
# data-<port>-n<N>/ and run-<port>-n<N>/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE_PORT="${KAFKA_PORT:-19092}"
BASE_CPORT="${KAFKA_CONTROLLER_PORT:-$((BASE_PORT + 1))}"
NODES="${KAFKA_NODES:-1}"
[[ "$NODES" =~ ^[1-9]$ ]] || { echo "kafka.sh: KAFKA_NODES=$NODES: want 1 to 9" >&2; exit 2; }
TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
HEAP="${KAFKA_HEAP:-768m}"
read -ra GC <<<"${KAFKA_GC:--XX:+UseG1GC}"
POM="$ROOT/scripts/kafka/pom.xml"
CACHE="$ROOT/.cache/kafka"
LIBS="$CACHE/libs"
VOTERS=""
for ((n = 1; n <= NODES; n++)); do
	VOTERS+="${VOTERS:+,}$n@127.0.0.1:$((BASE_CPORT + 2 * (n - 1)))"
done
RF=$((NODES < 3 ? NODES : 3))
MIN_ISR=$((NODES < 3 ? 1 : 2))

# node N points PORT, CPORT, DATA, RUN, PIDFILE and LOG at cluster node N.
node() {
	NODE=$1
	PORT=$((BASE_PORT + 2 * (NODE - 1)))
	CPORT=$((BASE_CPORT + 2 * (NODE - 1)))
	local suffix=""
	((NODE == 1)) || suffix="-n$NODE"
	DATA="$CACHE/data-$BASE_PORT$suffix"
	RUN="$CACHE/run-$BASE_PORT$suffix"
	PIDFILE="$RUN/kafka.pid"
	LOG="$RUN/server.log"
}
node 1

log() { echo "kafka.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

kafka_version() {
	if [[ -n "${KAFKA_VERSION:-}" ]]; then
		echo "$KAFKA_VERSION"
		return
	fi
	sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1
}

# pid_alive PID: the process exists and is not a zombie. Daemons we start are
# reparented to init, which may take a while to reap them once they exit.
pid_alive() {
	local state
	state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
	[[ -n "$state" && "$state" != Z ]]
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# running: true when the pid file names a live broker started by this script.
running() {
	[[ -f "$PIDFILE" ]] || return 1
	local pid
	pid="$(cat "$PIDFILE")"
	[[ -n "$pid" ]] && pid_alive "$pid" || return 1
	# Guard against a recycled pid belonging to something else.
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $RUN/server.properties"
}

fetch_jars() {
	local version stamp
	version="$(kafka_version)"
	[[ -n "$version" ]] || die "cannot read kafka.version from $POM"
	stamp="$LIBS/.kafka-version"
	if [[ -f "$stamp" && "$(cat "$stamp")" == "$version" ]] && compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null; then
		return
	fi
	command -v mvn >/dev/null || die "mvn not found (Debian: apt-get install maven)"
	log "fetching Kafka $version jars from Maven Central into $LIBS"
	local start=$SECONDS mvnlog="$CACHE/mvn.log"
	rm -rf "$LIBS"
	mkdir -p "$LIBS"
	if ! mvn -q -B -f "$POM" -Dkafka.version="$version" \
		dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS" >"$mvnlog" 2>&1; then
		cat "$mvnlog" >&2
		rm -rf "$LIBS"
		die "mvn could not fetch org.apache.kafka:kafka_2.13:$version (log above, also in $mvnlog)"
	fi
	echo "$version" >"$stamp"
	log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars in $((SECONDS - start))s"
}

# random_cluster_id prints a Kafka Uuid: 16 random bytes, URL-safe base64, no padding.
random_cluster_id() {
	local id
	while :; do
		id="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
		# Kafka's own generator avoids a leading '-' so the id never looks like a flag.
		[[ "$id" != -* ]] && break
	done
	echo "$id"
}

write_config() {
	mkdir -p "$RUN" "$DATA"
	# KAFKA_PROXIED="BIND:ADVERTISED" (node 1 only): a second listener on BIND that tells its
	# clients to reach the broker at ADVERTISED, where a fault-injecting proxy forwards to BIND
	# (cmd/chaos): clients that bootstrap there send all their traffic through the proxy.
	local PROXIED_LISTENER="" PROXIED_ADVERTISED=""
	if [[ -n "${KAFKA_PROXIED:-}" && "$NODE" == 1 ]]; then
		PROXIED_LISTENER=",PROXIED://127.0.0.1:${KAFKA_PROXIED%%:*}"
		PROXIED_ADVERTISED=",PROXIED://127.0.0.1:${KAFKA_PROXIED##*:}"
	fi
	cat >"$RUN/server.properties" <<EOF
process.roles=broker,controller
node.id=$NODE
controller.quorum.voters=$VOTERS
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT$PROXIED_LISTENER
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT$PROXIED_ADVERTISED
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PROXIED:PLAINTEXT
log.dirs=$DATA
auto.create.topics.enable=true
delete.topic.enable=true
num.partitions=4
default.replication.factor=$RF
min.insync.replicas=$MIN_ISR
offsets.topic.replication.factor=$RF
# Fewer than the default 50: the first consumer group of a run creates them all.
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=$RF
transaction.state.log.min.isr=$MIN_ISR
share.coordinator.state.topic.replication.factor=$RF
share.coordinator.state.topic.min.isr=$MIN_ISR
group.initial.rebalance.delay.ms=0
EOF
	cat >"$RUN/log4j2.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn">
  <Appenders>
    <File name="file" fileName="\${sys:kafka.log.file}" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Root level="INFO">
      <AppenderRef ref="file"/>
    </Root>
  </Loggers>
</Configuration>
EOF
}

# kjava LOGFILE ARGS...: a JVM on the Kafka jars, logging to LOGFILE.
kjava() {
	local logfile="$1"
	shift
	java -Djava.awt.headless=true "-Dlog4j2.configurationFile=$RUN/log4j2.xml" \
		"-Dkafka.log.file=$logfile" -cp "$LIBS/*" "$@"
}

# wait_ready DEADLINE CLUSTER_ID polls until our broker (the cluster id tells
# it from another on the same port) answers a cluster description with a
# registered broker, via kafka-clients' Admin (already in libs).
wait_ready() {
	local deadline=$1 cluster_id=$2 checker="$RUN/ReadyCheck.java"
	cat >"$checker" <<'EOF'
import java.util.Collection;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.common.Node;

public class ReadyCheck {
    public static void main(String[] args) throws Exception {
        long deadline = System.currentTimeMillis() + Long.parseLong(args[1]) * 1000;
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("request.timeout.ms", "3000");
        p.put("default.api.timeout.ms", "5000");
        Exception last = null;
        try (Admin admin = Admin.create(p)) {
            while (System.currentTimeMillis() < deadline) {
                try {
                    DescribeClusterResult r = admin.describeCluster();
                    Collection<Node> nodes = r.nodes().get();
                    Node controller = r.controller().get();
                    String clusterId = r.clusterId().get();
                    if (!args[2].equals(clusterId)) {
                        // Someone else's broker holds the port; ours failed to bind.
                        System.err.println("another Kafka (cluster " + clusterId + ") answers on " + args[0]);
                        System.exit(2);
                    }
                    if (nodes.size() >= Integer.parseInt(args[3]) && controller != null && !controller.isEmpty()) {
                        admin.listTopics().names().get();
                        // Finding a group coordinator creates __consumer_offsets. Doing it
                        // here spares the first consumer group of a test run kafka-go's
                        // 5s JoinGroupBackoff after "coordinator not available".
                        admin.listConsumerGroupOffsets("kafka-sh-ready-check")
                            .partitionsToOffsetAndMetadata().get();
                        System.out.println(nodes.size() + " broker(s), cluster " + clusterId);
                        return;
                    }
                } catch (Exception e) {
                    last = e;
                }
                Thread.sleep(200);
            }
        }
        System.err.println("metadata not ready: " + last);
        System.exit(1);
    }
}
EOF
	local left=$((deadline - SECONDS))
	((left > 0)) || left=1
	kjava "$RUN/readycheck.log" "$checker" "127.0.0.1:$PORT" "$left" "$cluster_id" "$NODES"
}

# print_controller prints the node id of the active KRaft controller (the quorum leader).
print_controller() {
	local checker="$CACHE/ControllerOf.java" n servers=""
	cat >"$checker" <<'EOF'
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;

public class ControllerOf {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("request.timeout.ms", "5000");
        p.put("default.api.timeout.ms", "10000");
        try (Admin admin = Admin.create(p)) {
            System.out.println(admin.describeMetadataQuorum().quorumInfo().get().leaderId());
        }
    }
}
EOF
	for ((n = 1; n <= NODES; n++)); do
		servers+="${servers:+,}127.0.0.1:$((BASE_PORT + 2 * (n - 1)))"
	done
	node 1
	java -Djava.awt.headless=true -cp "$LIBS/*" "$checker" "$servers" 2>/dev/null
}

fail_start() {
	log "ERROR: $*"
	if [[ -f "$LOG" ]]; then
		log "last lines of $LOG:"
		tail -n 40 "$LOG" >&2
	fi
	[[ -f "$RUN/stdout.log" ]] && tail -n 20 "$RUN/stdout.log" >&2
	stop_broker || true
	exit 1
}

start_broker() {
	node 1
	if running && port_open "$PORT"; then
		log "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
		return
	fi
	stop_broker
	local n
	for ((n = 1; n <= NODES; n++)); do
		node "$n"
		for p in "$PORT" "$CPORT"; do
			port_open "$p" && die "127.0.0.1:$p is already in use by a process this script did not start"
		done
	done
	command -v java >/dev/null || die "java not found (Debian: apt-get install openjdk-17-jre-headless)"
	fetch_jars

	local start=$SECONDS deadline=$((SECONDS + TIMEOUT))
	local id
	id="$(random_cluster_id)"
	for ((n = 1; n <= NODES; n++)); do
		node "$n"
		rm -rf "$DATA" "$RUN"
		write_config
		if ! kjava "$RUN/format.log" kafka.tools.StorageTool format --cluster-id "$id" \
			--config "$RUN/server.properties" >"$RUN/format.out" 2>&1; then
			cat "$RUN/format.out" >&2
			die "formatting storage in $DATA failed"
		fi
		echo "$id" >"$RUN/cluster.id"
	done
	# Every node first, then wait: a cluster's controllers need a quorum to elect a leader.
	for ((n = NODES; n >= 1; n--)); do
		node "$n"
		launch_node
	done
	await_node "$deadline" "$id"
	log "Kafka $(cat "$LIBS/.kafka-version") ready on 127.0.0.1:$PORT in $((SECONDS - start))s ($READY; pid $(cat "$PIDFILE"), log $LOG)"
}

# launch_node starts the current node's JVM on the config and data in place.
launch_node() {
	# setsid: the broker must outlive this script and not get the terminal's signals.
	setsid nohup java -Djava.awt.headless=true "-Dlog4j2.configurationFile=$RUN/log4j2.xml" \
		"-Dkafka.log.file=$LOG" "-Xms$HEAP" "-Xmx$HEAP" "${GC[@]}" \
		"-Xlog:gc,safepoint:file=$RUN/gc.log:utctime,level,tags:filecount=2,filesize=10m" -cp "$LIBS/*" \
		kafka.Kafka "$RUN/server.properties" </dev/null >>"$RUN/stdout.log" 2>&1 &
	echo $! >"$PIDFILE"
}

# await_node DEADLINE CLUSTER_ID waits until the current node listens and the cluster
# serves metadata with every node registered; READY holds the readiness line.
await_node() {
	local deadline=$1 id=$2
	until port_open "$PORT"; do
		running || fail_start "broker exited during startup"
		((SECONDS < deadline)) || fail_start "broker did not listen on 127.0.0.1:$PORT within ${TIMEOUT}s"
		sleep 0.2
	done
	if ! READY="$(wait_ready "$deadline" "$id" 2>&1)"; then
		echo "$READY" >&2
		fail_start "broker on 127.0.0.1:$PORT accepted connections but its metadata was not ready within ${TIMEOUT}s"
	fi
}

# start_node N starts node N again on its data (after kill9 or a crash).
start_node() {
	node "$1"
	[[ -f "$RUN/cluster.id" ]] || die "node $1 was never started (no $RUN/cluster.id)"
	running && die "node $1 is already running (pid $(cat "$PIDFILE"))"
	local start=$SECONDS deadline=$((SECONDS + TIMEOUT)) id
	id="$(cat "$RUN/cluster.id")"
	launch_node
	await_node "$deadline" "$id"
	log "Kafka node $1 started on 127.0.0.1:$PORT with its data in $((SECONDS - start))s ($READY; pid $(cat "$PIDFILE"))"
}

# kill9_node N kills node N the hard way: no controlled shutdown, nothing flushed on the way.
kill9_node() {
	node "$1"
	running || die "node $1 is not running on 127.0.0.1:$PORT"
	local pid
	pid="$(cat "$PIDFILE")"
	kill -KILL "$pid"
	while pid_alive "$pid"; do sleep 0.1; done
	log "killed node $1 (kill -9, pid $pid) on 127.0.0.1:$PORT"
}

# restart_broker keeps node 1's data: the same cluster comes back with everything it held.
restart_broker() {
	node 1
	running || die "no broker of ours is running on 127.0.0.1:$PORT (start it first)"
	[[ -f "$RUN/cluster.id" ]] || die "$RUN/cluster.id missing: started by an older kafka.sh; stop and start it"
	local start=$SECONDS deadline=$((SECONDS + TIMEOUT)) id
	id="$(cat "$RUN/cluster.id")"
	terminate_broker
	launch_node
	await_node "$deadline" "$id"
	log "Kafka restarted on 127.0.0.1:$PORT with its data in $((SECONDS - start))s ($READY; pid $(cat "$PIDFILE"))"
}

# terminate_broker stops the current node, if running, and leaves its data alone.
terminate_broker() {
	running || return 0
	local pid i
	pid="$(cat "$PIDFILE")"
	kill -TERM "$pid" 2>/dev/null || true
	# Controlled shutdown of a combined node takes a few seconds; do not wait forever.
	for ((i = 0; i < 300; i++)); do
		pid_alive "$pid" || break
		sleep 0.1
	done
	if pid_alive "$pid"; then
		log "broker (pid $pid) ignored SIGTERM for 30s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
		while pid_alive "$pid"; do sleep 0.1; done
	fi
	log "stopped broker on 127.0.0.1:$PORT (pid $pid)"
}

# stop_broker stops every node and removes the data. The other nodes of a cluster are killed
# first: a controlled shutdown would wait for a quorum that is going away.
stop_broker() {
	local n
	for ((n = NODES; n >= 2; n--)); do
		node "$n"
		if running; then
			kill -KILL "$(cat "$PIDFILE")" 2>/dev/null || true
		fi
	done
	for ((n = NODES; n >= 1; n--)); do
		node "$n"
		((n > 1)) || terminate_broker
		rm -f "$PIDFILE"
		rm -rf "$DATA"
	done
	node 1
}

case "${1:-}" in
start) start_broker ;;
stop) stop_broker ;;
status)
	rc=0
	for ((n = 1; n <= NODES; n++)); do
		node "$n"
		if running && port_open "$PORT"; then
			echo "kafka: running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
		else
			echo "kafka: not running on 127.0.0.1:$PORT"
			rc=1
		fi
	done
	exit "$rc"
	;;
fetch) fetch_jars ;;
restart) restart_broker ;;
crash)
	kill9_node "${2:-1}"
	sleep "${KAFKA_DOWN_SECONDS:-0}"
	start_node "${2:-1}"
	;;
kill9) kill9_node "${2:?kill9 needs a node number}" ;;
start-node) start_node "${2:?start-node needs a node number}" ;;
controller) print_controller ;;
*)
	echo "usage: $0 start|stop|status|fetch|restart|crash [N]|kill9 N|start-node N|controller" >&2
	exit 2
	;;
esac
