#!/usr/bin/env bash
# Runs the Redis servers the integration tests use, from Debian's packages
# (installed with apt-get when missing), as our own processes rather than the
# system service:
#   - a standalone redis-server on 127.0.0.1:16379
#   - a three-master Redis Cluster on 127.0.0.1:17000,17001,17002
#
#   scripts/redis.sh start|stop|status|restart|crash
#
# Environment: REDIS_PORT (16379), REDIS_CLUSTER_PORTS ("17000 17001 17002",
# or "none" for the standalone server only), REDIS_START_TIMEOUT (seconds,
# 30), REDIS_APPENDONLY (no; yes makes the standalone server keep an
# append-only file, so that `restart` and `crash` bring its data back),
# REDIS_APPENDFSYNC (everysec, or always: how often that file is fsynced).
# State lives in .cache/redis and is removed on stop, so every start is a clean
# cluster.
#
# restart shuts the standalone server down (SHUTDOWN: with REDIS_APPENDONLY=yes
# the append-only file is synced first) and starts it again on the same
# directory, after REDIS_DOWN_SECONDS (0) of outage: a Redis restart for
# fault-injection tests (cmd/chaos). crash is the same with kill -9 instead of
# SHUTDOWN: nothing is synced on the way down. Pass the same environment as to
# start.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${REDIS_PORT:-16379}"
read -r -a CLUSTER_PORTS <<<"${REDIS_CLUSTER_PORTS:-17000 17001 17002}"
[[ "${CLUSTER_PORTS[*]}" == none ]] && CLUSTER_PORTS=()
APPENDONLY="${REDIS_APPENDONLY:-no}"
APPENDFSYNC="${REDIS_APPENDFSYNC:-everysec}"
[[ "$APPENDFSYNC" == everysec || "$APPENDFSYNC" == always ]] || { echo "redis.sh: REDIS_APPENDFSYNC=$APPENDFSYNC: want everysec or always" >&2; exit 2; }
[[ "$APPENDONLY" == yes || "$APPENDONLY" == no ]] || { echo "redis.sh: REDIS_APPENDONLY=$APPENDONLY: want yes or no" >&2; exit 2; }
TIMEOUT="${REDIS_START_TIMEOUT:-30}"
DIR="$ROOT/.cache/redis"

log() { echo "redis.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ensure_installed() {
	command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return
	command -v apt-get >/dev/null || die "redis-server/redis-cli missing and apt-get not available"
	log "installing Debian's redis-server and redis-tools"
	local -a install=(apt-get install -y -q --no-install-recommends redis-server redis-tools)
	[[ $(id -u) -eq 0 ]] || install=(sudo "${install[@]}")
	export DEBIAN_FRONTEND=noninteractive
	if ! "${install[@]}" >"$DIR/apt.log" 2>&1; then
		# A fresh machine may have no package lists yet.
		log "install failed; running apt-get update and retrying"
		local -a update=(apt-get update -q)
		[[ $(id -u) -eq 0 ]] || update=(sudo "${update[@]}")
		"${update[@]}" >>"$DIR/apt.log" 2>&1 || { cat "$DIR/apt.log" >&2; die "apt-get update failed"; }
		"${install[@]}" >>"$DIR/apt.log" 2>&1 || { cat "$DIR/apt.log" >&2; die "apt-get install redis-server redis-tools failed"; }
	fi
	# The package starts the system service on its default port; we do not use it.
	if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
		systemctl stop redis-server >/dev/null 2>&1 || true
	fi
}

# pid_alive PID: the process exists and is not a zombie. Daemons we start are
# reparented to init, which may take a while to reap them once they exit.
pid_alive() {
	local state
	state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
	[[ -n "$state" && "$state" != Z ]]
}

cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }

# alive PORT: our redis-server on PORT is running (pid file names a live process).
alive() {
	local pidfile="$DIR/$1/redis.pid"
	[[ -f "$pidfile" ]] && pid_alive "$(cat "$pidfile")"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_server() {
	local port=$1
	shift
	local dir="$DIR/$port"
	mkdir -p "$dir"
	if port_open "$port"; then
		die "127.0.0.1:$port is already in use by a process this script did not start"
	fi
	redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" \
		--daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
		--save '' "$@" ||
		die "redis-server on port $port did not start (see $dir/redis.log)"
}

wait_ping() {
	local port=$1 deadline=$2
	until [[ "$(cli "$port" ping 2>/dev/null)" == PONG ]]; do
		if ((SECONDS >= deadline)); then
			tail -n 20 "$DIR/$port/redis.log" >&2 || true
			die "redis-server on 127.0.0.1:$port did not answer PING within ${TIMEOUT}s"
		fi
		sleep 0.1
	done
}

start_standalone() {
	start_server "$PORT" --appendonly "$APPENDONLY" --appendfsync "$APPENDFSYNC"
}

# restart_standalone keeps the data directory; only an append-only file brings data back.
# With "crash" it kills the server (kill -9) instead of shutting it down.
restart_standalone() {
	alive "$PORT" || die "no redis-server of ours is running on 127.0.0.1:$PORT (start it first)"
	local start=$SECONDS deadline=$((SECONDS + TIMEOUT)) pid i how=restarted
	pid="$(cat "$DIR/$PORT/redis.pid")"
	if [[ "${1:-}" == crash ]]; then
		kill -KILL "$pid"
		how="crashed (kill -9) and restarted"
	else
		cli "$PORT" shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
	fi
	for ((i = 0; i < 100; i++)); do
		pid_alive "$pid" || break
		sleep 0.1
	done
	pid_alive "$pid" && die "redis-server on 127.0.0.1:$PORT (pid $pid) did not shut down within 10s"
	sleep "${REDIS_DOWN_SECONDS:-0}"
	deadline=$((SECONDS + TIMEOUT))
	start_standalone
	wait_ping "$PORT" "$deadline"
	log "$how standalone on 127.0.0.1:$PORT in $((SECONDS - start))s (appendonly $APPENDONLY, appendfsync $APPENDFSYNC, keys: $(cli "$PORT" dbsize))"
}

start_all() {
	mkdir -p "$DIR"
	ensure_installed
	stop_all quiet
	local start=$SECONDS deadline=$((SECONDS + TIMEOUT)) p
	# A half-started set is of no use to anyone: stop it if anything below fails.
	trap 'stop_all quiet' EXIT

	start_standalone
	for p in "${CLUSTER_PORTS[@]}"; do
		start_server "$p" --appendonly no --cluster-enabled yes --cluster-config-file "$DIR/$p/nodes.conf" \
			--cluster-node-timeout 5000
	done
	for p in "$PORT" "${CLUSTER_PORTS[@]}"; do
		wait_ping "$p" "$deadline"
		# A server started by someone else between our port check and our start would answer too.
		if [[ "$(cli "$p" info server | tr -d '\r' | sed -n 's/^process_id://p')" != "$(cat "$DIR/$p/redis.pid" 2>/dev/null)" ]]; then
			die "127.0.0.1:$p is answered by a redis-server this script did not start"
		fi
	done
	log "standalone ready on 127.0.0.1:$PORT"
	if ((${#CLUSTER_PORTS[@]} == 0)); then
		trap - EXIT
		return
	fi

	local -a nodes=()
	for p in "${CLUSTER_PORTS[@]}"; do nodes+=("127.0.0.1:$p"); done
	if ! redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$DIR/cluster-create-${CLUSTER_PORTS[0]}.log" 2>&1; then
		cat "$DIR/cluster-create-${CLUSTER_PORTS[0]}.log" >&2
		die "redis-cli --cluster create failed"
	fi
	for p in "${CLUSTER_PORTS[@]}"; do
		until cli "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; do
			if ((SECONDS >= deadline)); then
				cli "$p" cluster info >&2 || true
				die "cluster node 127.0.0.1:$p did not reach cluster_state:ok within ${TIMEOUT}s"
			fi
			sleep 0.1
		done
	done
	trap - EXIT
	log "cluster ready on ${nodes[*]} in $((SECONDS - start))s"
}

stop_server() {
	local port=$1 dir="$DIR/$1" pid i
	if alive "$port"; then
		pid="$(cat "$dir/redis.pid")"
		cli "$port" shutdown nosave >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			pid_alive "$pid" || break
			sleep 0.1
		done
		pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null
		stopped+=("$port")
	fi
	# Cluster state (nodes.conf) must go, or the next start rejoins a stale cluster.
	rm -rf "$dir"
}

stop_all() {
	local -a stopped=()
	local p
	for p in "$PORT" "${CLUSTER_PORTS[@]}"; do stop_server "$p"; done
	if ((${#stopped[@]} > 0)) || [[ "${1:-}" != quiet ]]; then
		log "stopped redis-server on port(s): ${stopped[*]:-none running}"
	fi
}

case "${1:-}" in
start) start_all ;;
stop) stop_all ;;
status)
	rc=0
	for p in "$PORT" "${CLUSTER_PORTS[@]}"; do
		if alive "$p" && [[ "$(cli "$p" ping 2>/dev/null)" == PONG ]]; then
			echo "redis: running on 127.0.0.1:$p"
		else
			echo "redis: not running on 127.0.0.1:$p"
			rc=1
		fi
	done
	exit "$rc"
	;;
restart) restart_standalone ;;
crash) restart_standalone crash ;;
*)
	echo "usage: $0 start|stop|status|restart|crash" >&2
	exit 2
	;;
esac
