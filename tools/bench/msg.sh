#!/bin/sh
# msg.sh: builds ringkv-bench and runs the message-passing benchmark with the
# defaults (5 runs, medians; about a minute on 2 cores), then prints the JSON
# result and the machine it ran on, ready to paste into RESULTS.md.
# Progress goes to stderr.  Extra arguments are passed to `ringkv-bench msg`.
set -eu

cd "$(dirname "$0")/../.."
make --no-print-directory build/ringkv-bench >&2

json=$(build/ringkv-bench msg --json --runs 5 "$@")
cpu=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n 1)

echo "$json"
echo "machine: $(nproc) CPUs, Linux $(uname -r), ${cpu:-unknown CPU}"
