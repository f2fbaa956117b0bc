#!/usr/bin/env bash
# test_redis_cli: redis-cli against ringkv-server (two shards): plain commands, a mass insert
# through `redis-cli --pipe` (its replies counted, then every key read back), --scan with a
# pattern, RESP3 with -3, INFO keyspace, FLUSHALL.  RINGKV_TEST_TARGET=redis runs it
# against redis-server instead.
set -u
build=${RINGKV_BUILD:-build}
tmp=$(mktemp -d /tmp/ringkv-cli.XXXXXX)
log="$tmp/server.log"
fail=0
pid=

cleanup() {
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

check() { # check DESCRIPTION COMMAND...: records a failure unless COMMAND succeeds
	local what=$1
	shift
	if ! "$@"; then
		echo "FAIL: $what"
		fail=1
	fi
}

expect_eq() { # expect_eq DESCRIPTION EXPECTED ACTUAL
	if [ "$2" != "$3" ]; then
		printf 'FAIL: %s: expected %q, got %q\n' "$1" "$2" "$3"
		fail=1
	fi
}

port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$tmp/data"
if [ "${RINGKV_TEST_TARGET:-}" = redis ]; then
	/usr/bin/redis-server --port "$port" --bind 127.0.0.1 --dir "$tmp/data" --save "" \
		--appendonly no --databases 1 >"$log" 2>&1 &
else
	"$build/ringkv-server" --port "$port" --dir "$tmp/data" --threads 2 >"$log" 2>&1 &
fi
pid=$!
cli() { redis-cli -p "$port" "$@"; }

for ((i = 0; i < 600; i++)); do
	[ "$(cli PING 2>/dev/null)" = PONG ] && break
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "FAIL: the server exited before serving; log:"
		cat "$log"
		exit 1
	fi
	sleep 0.1
done
if [ "$(cli PING 2>/dev/null)" != PONG ]; then
	echo "FAIL: the server did not answer PING on port $port within 60 s; log:"
	cat "$log"
	exit 1
fi

expect_eq "SET" OK "$(cli SET greeting 'hello world')"
expect_eq "GET" "hello world" "$(cli GET greeting)"
expect_eq "GET of a missing key (raw output)" "" "$(cli --no-raw GET missing | sed 's/(nil)//')"
expect_eq "INCRBY" 42 "$(cli INCRBY counter 42)"
expect_eq "an error reply" "ERR wrong number of arguments for 'get' command" "$(cli GET a b 2>&1)"

# mass insertion, as the Redis documentation describes it: a RESP stream into --pipe
n=5000
/usr/bin/python3 - "$n" >"$tmp/stream" <<'EOF'
import sys
out = sys.stdout.buffer
for i in range(int(sys.argv[1])):
    key, val = b"pipe:%d" % i, b"value-%d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(val), val))
EOF
out=$(cli --pipe <"$tmp/stream" 2>&1)
check "redis-cli --pipe: $out" grep -q "errors: 0, replies: $n" <<<"$out"
expect_eq "DBSIZE after --pipe" $((n + 2)) "$(cli DBSIZE)"
expect_eq "GET pipe:0" value-0 "$(cli GET pipe:0)"
expect_eq "GET pipe:4999" value-4999 "$(cli GET pipe:4999)"
sample=$(cli MGET pipe:1 pipe:2500 pipe:4998 | tr '\n' ' ')
expect_eq "MGET after --pipe" "value-1 value-2500 value-4998 " "$sample"

# --scan walks SCAN to the end
expect_eq "--scan --pattern 'pipe:*' count" "$n" "$(cli --scan --pattern 'pipe:*' | sort -u | wc -l)"
expect_eq "--scan --pattern 'pipe:12?'" "pipe:120 pipe:121 pipe:122 pipe:123 pipe:124 pipe:125 pipe:126 pipe:127 pipe:128 pipe:129" \
	"$(cli --scan --pattern 'pipe:12?' | sort | tr '\n' ' ' | sed 's/ $//')"

# RESP3
out=$(cli -3 HELLO 3)
check "redis-cli -3 HELLO 3 shows proto 3: $out" grep -q '^proto 3$' <<<"$out"
expect_eq "RESP3 GET of a missing key" "(nil)" "$(cli -3 --no-raw GET missing)"
out=$(cli INFO keyspace)
check "INFO keyspace lists db0 with $((n + 2)) keys: $out" grep -q "^db0:keys=$((n + 2))," <<<"$(tr -d '\r' <<<"$out")"

expect_eq "FLUSHALL" OK "$(cli FLUSHALL)"
expect_eq "DBSIZE after FLUSHALL" 0 "$(cli DBSIZE)"

kill -TERM "$pid"
for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
	echo "FAIL: the server still runs 30 s after SIGTERM"
	fail=1
fi
wait "$pid"
rc=$?
pid=
expect_eq "exit status after SIGTERM" 0 "$rc"
[ $fail -eq 0 ] || { echo "---- server log ----"; tail -n 60 "$log"; }
exit $fail
