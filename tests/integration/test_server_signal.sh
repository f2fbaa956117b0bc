#!/usr/bin/env bash
# test_server_signal: ringkv-server starts its proactors, logs one line per
# proactor, and exits 0 after draining on SIGTERM and on SIGINT; --check-config
# accepts config.yaml and rejects a broken file with line and column.
set -u
build=${RINGKV_BUILD:-build}
server="$build/ringkv-server"
tmp=$(mktemp -d /tmp/ringkv-signal.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { # check DESCRIPTION COMMAND...
	local what=$1
	shift
	if ! "$@"; then
		echo "FAIL: $what"
		fail=1
	fi
}

# wait_for_line FILE PATTERN SECONDS: true once FILE has a line matching PATTERN.
wait_for_line() {
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		grep -q -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

for sig in TERM INT; do
	log="$tmp/server-$sig.log"
	# A free port, so the test does not depend on 6379 being unused.
	port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	"$server" --config config.yaml --port "$port" --threads 2 --dir "$tmp/data" \
		--set log.level=info 2>"$log" &
	pid=$!
	check "server started (SIG$sig run)" wait_for_line "$log" "started: 2 proactors" 10
	check "one ready line per proactor" test "$(grep -c 'proactor [01] ready' "$log")" -eq 2
	kill -s "$sig" "$pid"
	for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$pid" 2>/dev/null; then
		echo "FAIL: server still running 10 s after SIG$sig"
		kill -9 "$pid"
		fail=1
	fi
	wait "$pid"
	rc=$?
	check "exit status 0 after SIG$sig (got $rc)" test "$rc" -eq 0
	check "clean-stop line after SIG$sig" grep -q "received SIG$sig, shutting down" "$log"
	check "stopped cleanly after SIG$sig" grep -q "stopped cleanly" "$log"
	[ $fail -eq 0 ] || cat "$log"
done

check "--check-config accepts config.yaml" "$server" --config config.yaml --check-config >/dev/null
printf 'server:\n  port: 70000\n' >"$tmp/bad.yaml"
out=$("$server" --config "$tmp/bad.yaml" --check-config 2>&1)
rc=$?
check "--check-config rejects port 70000 (exit $rc)" test "$rc" -eq 1
check "error names file, line and column: $out" \
	grep -q "$tmp/bad.yaml:2:9: server.port: 70000 is out of range" <<<"$out"
out=$("$server" --no-such-flag 2>&1)
check "unknown flag is rejected: $out" grep -q "unknown argument '--no-such-flag'" <<<"$out"

exit $fail
