#!/bin/sh
# store.sh: builds ringkv-bench and runs the storage benchmark with the
# defaults (1 run; about 3-4 minutes on 2 cores, ~5 GiB of free disk in
# $TMPDIR or /tmp), then prints the JSON result and the machine it ran on,
# ready to paste into RESULTS.md.  Progress goes to stderr.  Extra arguments
# are passed to `ringkv-bench store` (e.g. --runs 3, --dir /mnt/disk).
#
# The references need fio and RocksDB's db_bench; when run as root, missing
# ones are installed with apt-get, otherwise the benchmark reports them as
# missing (null).
set -eu

cd "$(dirname "$0")/../.."
make --no-print-directory build/ringkv-bench >&2

missing=""
command -v fio >/dev/null 2>&1 || missing="$missing fio"
command -v db_bench >/dev/null 2>&1 || missing="$missing rocksdb-tools"
if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "installing:$missing" >&2
	apt-get install -y $missing >&2 || echo "could not install$missing" >&2
fi

json=$(build/ringkv-bench store --json "$@")
cpu=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n 1)
disk=$(df -T "${TMPDIR:-/tmp}" | awk 'NR == 2 { print $2 " on " $1 }')

echo "$json"
echo "machine: $(nproc) CPUs, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, Linux $(uname -r), ${cpu:-unknown CPU}; data on ${disk:-unknown}"
