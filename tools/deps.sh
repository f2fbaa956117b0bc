#!/bin/sh
# deps.sh: makes sure the libraries and tools ringkv builds and tests with are
# installed.  Run by `make run` and `make test`.  On Debian/Ubuntu as root it
# installs what is missing with apt-get; otherwise it prints the exact command.
set -eu

pkgs=""
need() { # need HEADER_OR_COMMAND PACKAGE
	case "$1" in
	/*) [ -e "$1" ] || pkgs="$pkgs $2" ;;
	*) command -v "$1" >/dev/null 2>&1 || pkgs="$pkgs $2" ;;
	esac
}
need cc gcc
need make make
need /usr/include/liburing.h liburing-dev
need /usr/include/rocksdb/c.h librocksdb-dev
need /usr/include/yaml.h libyaml-dev
need /usr/include/hiredis/hiredis.h libhiredis-dev
# Scripting: Lua 5.1 with the cjson and bit libraries scripts use.
need /usr/include/lua5.1/lua.h liblua5.1-0-dev
need /usr/include/lua5.1/lua-cjson.h lua-cjson-dev
need /usr/include/lua5.1/lua-bitop.h lua-bitop-dev
need timeout coreutils
need python3 python3
# The integration tests talk to the server with real clients.
need redis-cli redis-tools
# ...and compare with the reference server (import test, benchmarks).
need redis-server redis-server
need /usr/lib/python3/dist-packages/redis/__init__.py python3-redis

# The fuzz targets (make fuzz; make test runs each briefly) need clang-14 with
# libFuzzer.  Optional: without them those tests are skipped, so they are
# installed along when we can and only mentioned otherwise.
fuzz_pkgs=""
command -v clang-14 >/dev/null 2>&1 || fuzz_pkgs="$fuzz_pkgs clang-14"
[ -e /usr/lib/llvm-14/lib/libFuzzer.a ] || fuzz_pkgs="$fuzz_pkgs libfuzzer-14-dev"
ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1 ||
	fuzz_pkgs="$fuzz_pkgs libclang-rt-14-dev"
# Also optional: Node.js for the Node clients' test (test_clients_node.py fetches
# ioredis and node-redis from the npm registry, and is skipped without them).
# Installed on their own: a machine whose Node.js conflicts with Debian's keeps it.
node_pkgs=""
command -v node >/dev/null 2>&1 || node_pkgs="$node_pkgs nodejs"
command -v npm >/dev/null 2>&1 || node_pkgs="$node_pkgs npm"
fuzz_pkgs="$fuzz_pkgs$node_pkgs"

[ -z "$pkgs$fuzz_pkgs" ] && exit 0

cmd="apt-get install -y --no-install-recommends$pkgs$fuzz_pkgs"
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	if [ -z "$pkgs" ]; then
		echo "ringkv: the fuzz targets and the Node clients' test need$fuzz_pkgs (those tests are skipped);" \
			"install as root with:  apt-get update && $cmd" >&2
		exit 0
	fi
	echo "ringkv: missing build dependencies:$pkgs" >&2
	echo "ringkv: install them as root with:  apt-get update && $cmd" >&2
	exit 1
fi
echo "ringkv: installing build dependencies:$pkgs$fuzz_pkgs"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ -n "$pkgs" ]; then
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $pkgs
fi
for group in "${fuzz_pkgs%$node_pkgs}" "$node_pkgs"; do
	[ -n "$group" ] || continue
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $group ||
		echo "ringkv: could not install$group; the tests that need them are skipped" >&2
done
