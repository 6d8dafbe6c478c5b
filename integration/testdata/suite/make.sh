#!/bin/bash
# make.sh LOG TICKS BINDIR: make -j2 over Makefile.suite in a fresh
# directory, each of its 20 rules sleeping so that the run takes about as long
# as TICKS steps of the C programs.
log=$1 ticks=$2 bin=$3
dir=$(dirname "$log")/make.d
mkdir -p "$dir" && cd "$dir" || exit 1
ms=$((ticks * 15 / 2))
exec 3>>"$log"
exec make -j2 -f "$bin/Makefile.suite" D="$((ms / 1000)).$(printf %03d $((ms % 1000)))"
