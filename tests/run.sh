#!/usr/bin/env bash
# run.sh: builds and runs every ringkv test, then prints one closing line
# "N passed, N failed, N skipped".  `make test` calls it.
#
# First the layer rule (tools/check-layers.sh), then the passes
# (RINGKV_TEST_PASSES, default "normal asan tsan"):
#   normal  -O2 build in build/: every unit test and integration test, then
#           each fuzz target for a few seconds (skipped without clang-14)
#   asan    AddressSanitizer + UndefinedBehaviorSanitizer build in build/asan: the same
#   tsan    ThreadSanitizer build in build/tsan: the queue and pool tests
# A test is a program (tests/unit/test_*.c, built by the Makefile) or an
# executable script (tests/integration/test_*); it exits 0 (pass), 77 (skip)
# or anything else (fail), and is killed after RINGKV_TEST_TIMEOUT seconds.
# Under sanitizers RINGKV_TEST_SCALE shrinks the stress tests' message counts.
set -u
cd "$(dirname "$0")/.."

passes=${RINGKV_TEST_PASSES:-normal asan tsan}
timeout_s=${RINGKV_TEST_TIMEOUT:-300}
jobs=$(nproc 2>/dev/null || echo 2)
passed=0 failed=0 skipped=0
failures=()
logdir=$(mktemp -d /tmp/ringkv-tests.XXXXXX)

build() { # build DIR MAKE-ARGS...
	local dir=$1
	shift
	if ! make -s -j"$jobs" BUILD="$dir" WERROR="${WERROR:-}" "$@" "$dir/ringkv-server" "$dir/ringkv-import" "$dir/ringkv-bench" tests \
		>"$logdir/build-$(basename "$dir").log" 2>&1; then
		cat "$logdir/build-$(basename "$dir").log"
		echo "build of $dir failed"
		return 1
	fi
}

run_one() { # run_one PASS BUILD-DIR SCALE PROGRAM
	local pass=$1 dir=$2 scale=$3 prog=$4 name log rc start end
	name=$(basename "$prog")
	log="$logdir/$pass-$name.log"
	start=${EPOCHREALTIME/./}
	RINGKV_BUILD="$dir" RINGKV_SRC_DIR="$PWD" RINGKV_TEST_SCALE="$scale" \
		timeout --kill-after=10 "$timeout_s" "$prog" >"$log" 2>&1
	rc=$?
	end=${EPOCHREALTIME/./}
	local tenths=$(((end - start) / 100000))
	local secs="$((tenths / 10)).$((tenths % 10))"
	case $rc in
	0) passed=$((passed + 1)); printf 'PASS  %-7s %-32s %5ss\n' "$pass" "$name" "$secs" ;;
	77) skipped=$((skipped + 1)); printf 'SKIP  %-7s %-32s %s\n' "$pass" "$name" "$(tail -n 1 "$log")" ;;
	*)
		failed=$((failed + 1))
		failures+=("$pass/$name")
		[ $rc -eq 124 ] && echo "(timed out after ${timeout_s}s)" >>"$log"
		printf 'FAIL  %-7s %-32s exit %d, last lines of its output:\n' "$pass" "$name" "$rc"
		tail -n 30 "$log" | sed 's/^/      /'
		;;
	esac
}

# A check that is a command rather than a test program (the layer rule).
run_check() { # run_check NAME COMMAND...
	local name=$1 log="$logdir/check-$1.log"
	shift
	if "$@" >"$log" 2>&1; then
		passed=$((passed + 1))
		printf 'PASS  %-7s %-32s\n' check "$name"
	else
		failed=$((failed + 1))
		failures+=("check/$name")
		printf 'FAIL  %-7s %-32s last lines of its output:\n' check "$name"
		tail -n 30 "$log" | sed 's/^/      /'
	fi
}

# The fuzz targets (tests/fuzz/, make fuzz-build) as a smoke test: each runs
# RINGKV_FUZZ_SECONDS (5) on its seeds (tests/fuzz/fuzz.sh).  Skipped when
# clang-14 with libFuzzer is not installed.
fuzz_smoke() { # fuzz_smoke BUILD-DIR
	local dir=$1 why t name log rc start end tenths
	if ! why=$(tests/fuzz/fuzz.sh --check); then
		skipped=$((skipped + 1))
		printf 'SKIP  %-7s %-32s %s\n' fuzz "fuzz_*" "$why"
		return
	fi
	if ! make -s -j"$jobs" BUILD="$dir" WERROR="${WERROR:-}" fuzz-build \
		>"$logdir/build-fuzz.log" 2>&1; then
		cat "$logdir/build-fuzz.log"
		echo "build of the fuzz targets in $dir/fuzz failed"
		failed=$((failed + 1))
		failures+=("fuzz/build")
		return
	fi
	for t in "$dir"/fuzz/fuzz_*; do
		[ -x "$t" ] || continue
		name=$(basename "$t")
		log="$logdir/fuzz-$name.log"
		start=${EPOCHREALTIME/./}
		timeout --kill-after=10 "$timeout_s" tests/fuzz/fuzz.sh "$dir" \
			"${RINGKV_FUZZ_SECONDS:-5}" "${name#fuzz_}" >"$log" 2>&1
		rc=$?
		end=${EPOCHREALTIME/./}
		tenths=$(((end - start) / 100000))
		case $rc in
		0) passed=$((passed + 1)); printf 'PASS  %-7s %-32s %5ss\n' fuzz "$name" "$((tenths / 10)).$((tenths % 10))" ;;
		77) skipped=$((skipped + 1)); printf 'SKIP  %-7s %-32s %s\n' fuzz "$name" "$(tail -n 1 "$log")" ;;
		*)
			failed=$((failed + 1))
			failures+=("fuzz/$name")
			printf 'FAIL  %-7s %-32s exit %d, last lines of its output:\n' fuzz "$name" "$rc"
			tail -n 30 "$log" | sed 's/^/      /'
			;;
		esac
	done
}

run_pass() { # run_pass PASS DIR SCALE FILTER
	local pass=$1 dir=$2 scale=$3 filter=$4 t
	for t in "$dir"/tests/test_* tests/integration/test_*; do
		[ -x "$t" ] || continue
		case $(basename "$t") in $filter) run_one "$pass" "$dir" "$scale" "$t" ;; esac
	done
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}

run_check check-layers tools/check-layers.sh

for pass in $passes; do
	case $pass in
	normal)
		build build && run_pass normal build 1 'test_*' || failed=$((failed + 1))
		fuzz_smoke build
		;;
	asan) build build/asan SANITIZE=address,undefined && run_pass asan build/asan 0.5 'test_*' ||
		failed=$((failed + 1)) ;;
	tsan)
		if build build/tsan SANITIZE=thread; then
			for t in build/tsan/tests/test_msgq_* build/tsan/tests/test_pool_*; do
				[ -x "$t" ] || continue
				run_one tsan build/tsan 0.2 "$t"
			done
		else
			failed=$((failed + 1))
		fi
		;;
	*) echo "unknown test pass '$pass' (normal, asan, tsan)"; failed=$((failed + 1)) ;;
	esac
done

[ ${#failures[@]} -gt 0 ] && echo "failed: ${failures[*]}"
echo "logs: $logdir"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
