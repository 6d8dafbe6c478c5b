#!/usr/bin/env bash
# demo.sh shows a checkpoint/restart cycle a user can watch:
#
#   1. a tiny C counter writes an increasing number to a log file every 0.2 s,
#      started under `ckpt-apptainer launch --interval 2`;
#   2. once the first checkpoint generation exists, the whole job (supervisor
#      and everything below it) is SIGKILLed, as a preempted Slurm job would be;
#   3. `ckpt-apptainer restart` resumes it from the newest checkpoint, and after
#      a few seconds `ckpt-apptainer checkpoint --kill` stops it;
#   4. the log must hold every number exactly once, in order.
#
# Why step 4 proves a restore: the counter starts at a random number and writes
# through its own file offset (no O_APPEND). After the restart the process
# rewrites, at the same place, the lines it wrote between the checkpoint and
# the kill. So the log is one unbroken run from the random start only if the
# counter's memory, registers and file offset all came back: a fresh start
# would write a different start number, a lost offset would repeat or skip.
#
# Run as root, the demo runs the job as the unprivileged test user inside its
# delegated cgroups (see scripts/setup-test-env.sh); CKPT_DEMO_AS_ROOT=1 keeps
# root. CKPT_DEMO_KEEP=1 keeps the temporary directory.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN=${CKPT_BIN:-$REPO_DIR/bin/ckpt-apptainer}
TEST_ENV=/run/ckpt-apptainer-test.env

say() { printf '\n==> %s\n' "$*"; }
fail() {
	printf '\ndemo FAILED: %s\n' "$*" >&2
	exit 1
}

[[ -x $BIN ]] || fail "$BIN not found; run 'make build' first"

# As root, start again as the test user, placed in its delegated cgroups first:
# the tool is meant for unprivileged batch jobs.
if [[ $(id -u) -eq 0 && ${CKPT_DEMO_AS_ROOT:-0} != 1 && -r $TEST_ENV ]]; then
	# shellcheck disable=SC1090
	source "$TEST_ENV"
	if id -u "${CKPT_TEST_USER:-}" >/dev/null 2>&1; then
		echo "running the demo as $CKPT_TEST_USER (set CKPT_DEMO_AS_ROOT=1 to stay root)"
		# shellcheck disable=SC2016 # expanded by the inner shell
		exec env V2="${CKPT_TEST_V2_USER:-}" V1="${CKPT_TEST_V1_USER:-}" sh -c '
			if [ -n "$V2" ]; then echo $$ >"$V2/cgroup.procs"; fi
			if [ -n "$V1" ]; then echo $$ >"$V1/cgroup.procs"; fi
			exec runuser -u "$0" -- env CKPT_BIN="$1" CKPT_DEMO_KEEP="$2" bash "$3"
		' "$CKPT_TEST_USER" "$BIN" "${CKPT_DEMO_KEEP:-0}" "$REPO_DIR/scripts/demo.sh"
	fi
fi

command -v gcc >/dev/null || fail "gcc not found; run scripts/install-deps.sh as root"

TMP=$(mktemp -d /tmp/ckpt-demo.XXXXXX)
CKPT=$TMP/ckpt
LOG=$TMP/counter.log
STARTED=() # pids of supervisors this script started

# descendants prints pid $1 and every process below it.
descendants() {
	local todo=("$1") p c
	while ((${#todo[@]})); do
		p=${todo[0]}
		todo=("${todo[@]:1}")
		[[ -d /proc/$p ]] || continue
		echo "$p"
		# shellcheck disable=SC2013 # the file is a space-separated list of pids
		for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do
			todo+=("$c")
		done
	done
}

# kill_tree SIGKILLs pid $1 and all its descendants. Every process found is
# stopped first, so that none can fork or be reparented away while the tree is
# collected; then all of them are killed together.
kill_tree() {
	local root=$1 all=() seen=" " p changed=1
	while ((changed)); do
		changed=0
		for p in $(descendants "$root"); do
			if [[ $seen != *" $p "* ]]; then
				seen+="$p "
				all+=("$p")
				kill -STOP "$p" 2>/dev/null || true
				changed=1
			fi
		done
	done
	((${#all[@]})) || return 0
	kill -KILL "${all[@]}" 2>/dev/null || true
	# Wait until they are gone, zombies reaped too, as after a real preemption.
	local i alive
	for ((i = 0; i < 100; i++)); do
		alive=0
		for p in "${all[@]}"; do
			[[ -e /proc/$p ]] && alive=1
		done
		((alive)) || break
		sleep 0.1
	done
}

cleanup() {
	local rc=$? p
	for p in "${STARTED[@]}"; do
		kill_tree "$p"
	done
	if [[ $rc -eq 0 && ${CKPT_DEMO_KEEP:-0} != 1 ]]; then
		rm -rf "$TMP"
	else
		echo "files kept in $TMP"
	fi
}
trap cleanup EXIT

# wait_for waits up to $1 seconds for the command $2... to succeed while the
# supervisor with pid $PID is alive.
wait_for() {
	local secs=$1 i
	shift
	for ((i = 0; i < secs * 10; i++)); do
		"$@" && return 0
		kill -0 "$PID" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

last_number() { tail -n 1 "$LOG" 2>/dev/null | tr -dc '0-9'; }

say "compiling the counter ($TMP/counter.c)"
cat >"$TMP/counter.c" <<'EOF'
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Writes start, start+1, ... to argv[1], one line every 0.2 s, through its own
 * file offset. The start is random so that a fresh run cannot pass for a
 * restored one. */
int main(int argc, char **argv)
{
	unsigned int r = 0;
	int fd, rnd;

	if (argc != 2) {
		fprintf(stderr, "usage: %s LOGFILE\n", argv[0]);
		return 2;
	}
	rnd = open("/dev/urandom", O_RDONLY);
	if (rnd < 0 || read(rnd, &r, sizeof r) != sizeof r) {
		perror("/dev/urandom");
		return 1;
	}
	close(rnd);
	fd = open(argv[1], O_WRONLY | O_CREAT, 0644);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	/* Seven digits for a long time: every line has the same length. */
	for (unsigned long n = 1000000 + r % 8000000;; n++) {
		char line[32];
		int len = snprintf(line, sizeof line, "%lu\n", n);
		if (write(fd, line, len) != len) {
			perror("write");
			return 1;
		}
		usleep(200000);
	}
}
EOF
gcc -O2 -Wall -o "$TMP/counter" "$TMP/counter.c"

cd "$TMP"
say "launching: ckpt-apptainer launch --interval 2 --ckpt-dir $CKPT -- ./counter $LOG"
"$BIN" launch --interval 2 --ckpt-dir "$CKPT" -- ./counter "$LOG" >"$TMP/launch.out" 2>&1 &
PID=$!
disown "$PID" # it gets killed on purpose; no job report for it
STARTED+=("$PID")

if ! wait_for 60 test -d "$CKPT/gen-000001"; then
	cat "$TMP/launch.out" >&2
	kill -0 "$PID" 2>/dev/null || fail "the supervisor exited before the first checkpoint"
	fail "no checkpoint generation appeared within 60 s"
fi
echo "first checkpoint written: $CKPT/gen-000001"
sleep 1.3 # let the counter run past the checkpoint, so the restore must rewind

say "killing the whole job with SIGKILL (simulated preemption)"
kill_tree "$PID"
STARTED=()
[[ -s $LOG ]] || fail "the counter wrote nothing"
FIRST=$(head -n 1 "$LOG")
KILLED_AT=$(last_number)
echo "log when killed (first number $FIRST):"
tail -n 5 "$LOG" | sed 's/^/    /'

say "checkpoints on disk: ckpt-apptainer list --ckpt-dir $CKPT"
"$BIN" list --ckpt-dir "$CKPT" || fail "list failed"

say "restarting: ckpt-apptainer restart --ckpt-dir $CKPT"
"$BIN" restart --ckpt-dir "$CKPT" >"$TMP/restart.out" 2>&1 &
PID=$!
STARTED+=("$PID")
past_kill() { [[ $(last_number) -gt $KILLED_AT ]]; }
if ! wait_for 30 past_kill; then
	cat "$TMP/restart.out" >&2
	fail "the restarted counter did not get past $KILLED_AT within 30 s"
fi
sleep 2
echo "the counter runs again:"
tail -n 3 "$LOG" | sed 's/^/    /'

say "stopping it: ckpt-apptainer checkpoint --ckpt-dir $CKPT --kill"
"$BIN" checkpoint --ckpt-dir "$CKPT" --kill || fail "checkpoint --kill failed"
for ((i = 0; i < 300; i++)); do
	kill -0 "$PID" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$PID" 2>/dev/null && fail "the restarted supervisor is still running after checkpoint --kill"
set +e
wait "$PID"
status=$?
set -e
STARTED=()
echo "restart supervisor exited with status $status"
"$BIN" list --ckpt-dir "$CKPT" --json >"$TMP/list.json" || fail "list --json failed"
echo "generations: $(grep -o '"generation": *[0-9]*' "$TMP/list.json" | grep -o '[0-9]*$' | tr '\n' ' ')"

say "checking the log"
# Every line must be the previous one plus one, from the first number on.
if ! awk -v first="$FIRST" '
	$0 !~ /^[0-9]+$/ { printf "line %d is not a number: %s\n", NR, $0; bad = 1; exit }
	$0 != first + NR - 1 {
		printf "line %d is %s, expected %d (%s)\n", NR, $0, first + NR - 1,
			($0 < first + NR - 1) ? "a repeat" : "a gap"
		bad = 1; exit
	}
	END { if (NR == 0) { print "empty log"; bad = 1 } exit bad }
' "$LOG"; then
	fail "the log is not one unbroken sequence from $FIRST"
fi
LAST=$(last_number)
((LAST > KILLED_AT)) || fail "the log ends at $LAST, not past the kill point $KILLED_AT"
printf 'OK: %d numbers, %s..%s, each exactly once; killed at %s, resumed from the checkpoint and went on to %s\n' \
	"$(wc -l <"$LOG")" "$FIRST" "$LAST" "$KILLED_AT" "$LAST"
