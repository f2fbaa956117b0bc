#!/usr/bin/env bash
# check-layers.sh: enforces ringkv's layer rule from the #include lines of every
# source file (docs/ARCHITECTURE.md, "Layers").  `make check-layers` runs it;
# `make test` runs that first.  Prints each offending FILE:LINE with the rule it
# breaks and exits 1; prints nothing and exits 0 when the rule holds.
#
#   service/runtime/   includes only service/runtime/
#   service/config.*   a leaf: includes only service/runtime/
#   storage/           includes storage/ and service/runtime/
#   net/               includes net/ and service/runtime/
#   tools/             includes tools/, storage/, net/, service/runtime/ and the
#                      config leaf (service/config.h), no other daemon file
#   service/ (daemon)  anything above;  tests/  anything
set -u
cd "$(dirname "$0")/.."

allowed() { # allowed FILE TARGET -> 0 if FILE may include TARGET
	local file=$1 target=$2
	case $file in
	service/runtime/*) case $target in service/runtime/*) return 0 ;; esac ;;
	service/config.*) case $target in service/runtime/* | service/config.h) return 0 ;; esac ;;
	storage/*) case $target in storage/* | service/runtime/*) return 0 ;; esac ;;
	net/*) case $target in net/* | service/runtime/*) return 0 ;; esac ;;
	tools/*)
		case $target in tools/* | storage/* | net/* | service/runtime/* | service/config.h) return 0 ;; esac ;;
	*) return 0 ;;
	esac
	return 1
}

rule_of() { # the rule FILE is held to, for the message
	case $1 in
	service/runtime/*) echo "the runtime includes nothing outside service/runtime/" ;;
	service/config.*) echo "the config leaf includes only service/runtime/" ;;
	storage/*) echo "storage/ includes only storage/ and service/runtime/" ;;
	net/*) echo "net/ includes only net/ and service/runtime/" ;;
	tools/*) echo "tools/ include storage/, net/, service/runtime/ and service/config.h, no daemon file" ;;
	esac
}

bad=0
while IFS= read -r file; do
	dir=$(dirname "$file")
	while IFS=: read -r line inc; do
		target=$(sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]+)".*/\1/' <<<"$inc")
		# A quoted include resolves next to the including file first, as the
		# compiler does, then from the top (-I.).
		[ -e "$dir/$target" ] && target=$(realpath --relative-to=. "$dir/$target")
		if ! allowed "$file" "$target"; then
			echo "$file:$line: includes $target, but $(rule_of "$file")"
			bad=1
		fi
	done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$file")
done < <(find service storage net tools tests -name "*.[ch]" | sort)
exit $bad
