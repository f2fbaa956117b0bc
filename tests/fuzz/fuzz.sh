#!/usr/bin/env bash
# fuzz.sh: runs the libFuzzer targets `make fuzz-build` made, each for SECONDS
# seconds on a temporary copy of its seeds (tests/fuzz/corpus/TARGET: the
# repository's corpus is never written), with its dictionary
# (tests/fuzz/fuzz_TARGET.dict) and extra libFuzzer flags
# (tests/fuzz/fuzz_TARGET.options, one per line) when it has them.  TMPDIR of
# each run is a temporary directory removed afterwards, so a crashed target
# leaves no data directory behind.
#
#   tests/fuzz/fuzz.sh BUILD-DIR SECONDS TARGET...   run; `make fuzz` and tests/run.sh call it
#   tests/fuzz/fuzz.sh --check                       is clang-14 with libFuzzer there?
#
# Prints one line per target: runs, exec/s, corpus size, libFuzzer's cov: and
# ft:, peak RSS.  A target that crashes (or leaks, or hangs) gets its log's
# last lines and the path of the input that did it, kept with the log in
# ${TMPDIR:-/tmp}/ringkv-fuzz-TARGET.XXXXXX (FUZZ_KEEP=1 keeps that directory
# after a clean run too).  Exits 0 when every target ran clean, 1 when one
# crashed, 77 (skip) when one needs what this machine lacks (a disk file
# system for TMPDIR) or, with --check, when the fuzzing toolchain is missing.
set -u
cd "$(dirname "$0")/../.."

if [ "${1:-}" = --check ]; then
	cc=${FUZZ_CC:-clang-14}
	probe=$(mktemp /tmp/ringkv-fuzz-probe.XXXXXX)
	if ! command -v "$cc" >/dev/null 2>&1 ||
		! echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return d && n; }' |
		"$cc" -x c -fsanitize=fuzzer,address,undefined - -o "$probe" >/dev/null 2>&1; then
		rm -f "$probe"
		echo "$cc with libFuzzer is not installed (Debian: apt-get install clang-14" \
			"libfuzzer-14-dev libclang-rt-14-dev; tools/deps.sh does it as root)"
		exit 77
	fi
	rm -f "$probe"
	exit 0
fi

if [ $# -lt 3 ]; then
	echo "usage: $0 BUILD-DIR SECONDS TARGET...   or   $0 --check" >&2
	exit 2
fi
build=$1 seconds=$2
shift 2
status=0

# The last value of `key:` on libFuzzer's status lines, or of `stat::key:`.
stat_of() { # stat_of LOG KEY
	grep -o "$2: *[0-9]*" "$1" | tail -n 1 | grep -o '[0-9]*$'
}

for t in "$@"; do
	bin=$build/fuzz/fuzz_$t
	if [ ! -x "$bin" ]; then
		echo "fuzz_$t: $bin is not built (make fuzz-build)"
		status=1
		continue
	fi
	work=$(mktemp -d "${TMPDIR:-/tmp}/ringkv-fuzz-$t.XXXXXX")
	mkdir "$work/corpus" "$work/tmp" "$work/crashes"
	if [ -d "tests/fuzz/corpus/$t" ]; then
		cp tests/fuzz/corpus/"$t"/* "$work/corpus/" 2>/dev/null
	fi
	flags=(-max_total_time="$seconds" -print_final_stats=1 -error_exitcode=1
		-timeout_exitcode=1 -artifact_prefix="$work/crashes/")
	[ -f "tests/fuzz/fuzz_$t.dict" ] && flags+=(-dict="tests/fuzz/fuzz_$t.dict")
	if [ -f "tests/fuzz/fuzz_$t.options" ]; then
		while read -r opt; do
			case $opt in -*) flags+=("$opt") ;; esac
		done <"tests/fuzz/fuzz_$t.options"
	fi
	TMPDIR="$work/tmp" "$bin" "${flags[@]}" "$work/corpus" >"$work/log" 2>&1
	rc=$?
	rm -rf "$work/tmp"
	log=$work/log
	if [ $rc -eq 77 ]; then
		echo "fuzz_$t: skipped: $(tail -n 1 "$log")"
		[ $status -eq 0 ] && status=77
		rm -rf "$work"
		continue
	fi
	printf 'fuzz_%s: %s s, %s runs (%s/s), corpus %s, cov %s, ft %s, rss %s MB\n' "$t" \
		"$seconds" "$(stat_of "$log" stat::number_of_executed_units)" \
		"$(stat_of "$log" stat::average_exec_per_sec)" "$(ls "$work/corpus" | wc -l)" \
		"$(stat_of "$log" cov)" "$(stat_of "$log" ft)" "$(stat_of "$log" stat::peak_rss_mb)"
	if [ $rc -ne 0 ] || [ -n "$(ls "$work/crashes")" ]; then
		echo "fuzz_$t: FAILED (exit $rc); last lines of $log:"
		tail -n 40 "$log" | sed 's/^/    /'
		for f in "$work"/crashes/*; do
			[ -e "$f" ] && echo "fuzz_$t: input that did it: $f"
		done
		status=1
	elif [ -n "${FUZZ_KEEP:-}" ]; then
		echo "fuzz_$t: kept $work"
	else
		rm -rf "$work"
	fi
done
exit $status
