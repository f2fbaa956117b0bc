#!/usr/bin/env bash
# import.sh: benchmarks ringkv-import.  Generates ROWS rows (16-byte keys,
# 100-byte values; default 10 M) as CSV and as RESP, then measures, RUNS
# times each (default 3), in this order within every round:
#   offline       ringkv-import --offline into a fresh data directory
#   online-ringkv ringkv-import (CSV) into a fresh ringkv-server (--threads 2)
#   online-redis  ringkv-import (CSV) into a fresh redis-server
#   redis-pipe    redis-cli --pipe (the RESP file) into a fresh redis-server:
#                 the reference
#   rocksdb-fill  RocksDB's db_bench fillrandom of ROWS rows shaped like the
#                 index rows an import writes (21-byte hash-ordered keys,
#                 12-byte entries, no WAL, 8 MiB memtables, LZ4): what the
#                 index alone costs on this machine, with no network, parsing,
#                 log or key table — a ceiling for online-ringkv
# and prints each run's rows/s, the medians and the ratios to the reference.
# TARGETS (default all four) picks some: ringkv-server's own write path makes
# online-ringkv take minutes at 10 M rows.
# redis-server runs with --save "" --appendonly no (nothing written to disk);
# ringkv-server with its defaults (durability fsync).  Needs ~4 GiB free in
# $TMPDIR (default /tmp) and redis-server / redis-cli (Debian's redis-server,
# redis-tools).  Progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."

BUILD=${BUILD:-build}
ROWS=${ROWS:-10000000}
RUNS=${RUNS:-3}
TARGETS=${TARGETS:-offline online-ringkv online-redis redis-pipe rocksdb-fill}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringkv-import-bench.XXXXXX")
SERVER_PID=""
cleanup() {
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT

make --no-print-directory -s BUILD="$BUILD" "$BUILD/ringkv-import" "$BUILD/ringkv-server" >&2
for c in redis-server redis-cli perl; do
	command -v "$c" >/dev/null || { echo "import.sh: $c is missing (apt-get install redis-server redis-tools perl)" >&2; exit 1; }
done
if [[ " $TARGETS " == *" rocksdb-fill "* ]] && ! command -v db_bench >/dev/null; then
	echo "import.sh: db_bench is missing (apt-get install rocksdb-tools), or leave rocksdb-fill out of TARGETS" >&2
	exit 1
fi

echo "generating $ROWS rows..." >&2
perl -e '$v = "v" x 88; for $i (0..'"$((ROWS - 1))"') { printf "key:%012d,%s%012d\n", $i, $v, $i }' >"$TMP/rows.csv"
perl -e '$v = "v" x 88; for $i (0..'"$((ROWS - 1))"') {
	printf "*3\r\n\$3\r\nSET\r\n\$16\r\nkey:%012d\r\n\$100\r\n%s%012d\r\n", $i, $v, $i }' >"$TMP/rows.resp"

now() { date +%s.%N; }
rate() { awk -v n="$ROWS" -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", n / (b - a) }'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_ping() {
	for _ in $(seq 600); do
		[ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0
		sleep 0.1
	done
	echo "import.sh: the server on port $1 did not start" >&2
	exit 1
}
start_ringkv() {
	rm -rf "$TMP/srv"
	"$BUILD"/ringkv-server --dir "$TMP/srv" --port "$1" --threads 2 >"$TMP/server.log" 2>&1 &
	SERVER_PID=$!
	wait_ping "$1"
}
start_redis() {
	redis-server --port "$1" --save "" --appendonly no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
	SERVER_PID=$!
	wait_ping "$1"
}
stop_server() {
	kill "$SERVER_PID"
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=""
}
check_count() { # check_count PORT
	local n
	n=$(redis-cli -p "$1" dbsize)
	[ "$n" = "$ROWS" ] || { echo "import.sh: DBSIZE $n after importing $ROWS rows" >&2; exit 1; }
}

want() { [[ " $TARGETS " == *" $1 "* ]]; }
declare -A results
for run in $(seq "$RUNS"); do
	echo "round $run/$RUNS" >&2
	if want offline; then
	rm -rf "$TMP/data"
	a=$(now)
	"$BUILD"/ringkv-import --offline --dir "$TMP/data" --quiet "$TMP/rows.csv"
	b=$(now)
	results[offline]+="$(rate "$a" "$b") "
	rm -rf "$TMP/data"
	fi

	if want online-ringkv; then
	port=$(free_port)
	start_ringkv "$port"
	a=$(now)
	"$BUILD"/ringkv-import --port "$port" --quiet "$TMP/rows.csv"
	b=$(now)
	check_count "$port"
	stop_server
	results[online-ringkv]+="$(rate "$a" "$b") "
	fi

	if want online-redis; then
	port=$(free_port)
	start_redis "$port"
	a=$(now)
	"$BUILD"/ringkv-import --port "$port" --quiet "$TMP/rows.csv"
	b=$(now)
	check_count "$port"
	stop_server
	results[online-redis]+="$(rate "$a" "$b") "
	fi

	if want redis-pipe; then
	port=$(free_port)
	start_redis "$port"
	a=$(now)
	redis-cli -p "$port" --pipe <"$TMP/rows.resp" >"$TMP/pipe.out"
	b=$(now)
	check_count "$port"
	stop_server
	results[redis-pipe]+="$(rate "$a" "$b") "
	fi

	if want rocksdb-fill; then
	rm -rf "$TMP/dbb"
	out=$(db_bench --benchmarks=fillrandom --num="$ROWS" --key_size=21 --value_size=12 \
		--disable_wal=1 --write_buffer_size=8388608 --compression_type=lz4 --threads=1 \
		--db="$TMP/dbb" 2>&1) || { echo "import.sh: db_bench failed: $out" >&2; exit 1; }
	ops=$(echo "$out" | awk '/^fillrandom/ { for (i = 1; i <= NF; i++) if ($(i + 1) == "ops/sec") { print $i; exit } }')
	[ -n "$ops" ] || { echo "import.sh: no result from db_bench: $out" >&2; exit 1; }
	rm -rf "$TMP/dbb"
	results[rocksdb-fill]+="$ops "
	fi
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ref=$(echo "${results[redis-pipe]:-}" | median)
for k in $TARGETS; do
	m=$(echo "${results[$k]}" | median)
	printf '%-14s rows/s: %s  median %s  (%sx redis-cli --pipe)\n' "$k" "${results[$k]}" "$m" \
		"$(awk -v m="$m" -v r="$ref" 'BEGIN { if (r > 0) printf "%.2f", m / r; else print "?" }')"
done
cpu=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n 1)
echo "machine: $(nproc) CPUs, Linux $(uname -r), ${cpu:-unknown CPU}; $ROWS rows, $RUNS runs; $(redis-server --version | cut -d' ' -f1-3)"
