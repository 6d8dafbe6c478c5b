#!/bin/bash
# pipeline LOG TICKS BINDIR: gen | filter | gzip > out.gz, then the whole of
# out.gz must decompress and hold every generated line exactly once.
set -o pipefail
log=$1 ticks=$2 bin=$3
out=$(dirname "$log")/out.gz
# The log stays open in the shell: a checkpoint always finds it open.
exec 3>>"$log"
if ! "$bin/pipegen" "$log" "$ticks" gen | grep --line-buffered '^line ' | gzip >"$out"; then
	echo "FAIL: pipeline: gen | grep | gzip failed" >&3
	exit 1
fi
if ! gzip -t "$out" 2>>"$log.err"; then
	echo "FAIL: pipeline: $out does not decompress: $(tail -c 200 "$log.err")" >&3
	exit 1
fi
gzip -dc "$out" | "$bin/pipegen" "$log" "$ticks" check
