#!/bin/bash
# node.sh NODE runs on both nodes of scripts/two-nodes.sh, from the shared
# directory that holds it (integration/nodes_test.go puts it there with the
# programs, node.env and the unprivileged user's job directory):
#
#   node-a (the older CPU) launches the C job (/dev/shm objects, a scratch
#   file in its node-local /tmp) and the Python multiprocessing job
#   (semaphores, shared_memory), checkpoints both with --kill, then tries
#   to restart the AVX job of node-b, which it must refuse.
#   node-b (the newer CPU) launches and checkpoints the AVX job first, so
#   its pids differ from node-a's, restarts node-a's two jobs to their end,
#   and once node-a refused the AVX job, restarts that to its end as well.
#
# Everything a job does runs as the unprivileged user in its delegated
# cgroup. Each step's output lands in the shared directory as
# NODE.STEP.out, its exit status in NODE.STEP.status; the host checks
# them. A step that cannot go on ends the script with "FAIL why".
set -u
NODE=$1
S=$(dirname "$(realpath "$0")")
# shellcheck source=/dev/null
source "$S/node.env" # USER_UID USER_GID PYTHON AVX_SECONDS TICKS
J=$S/job
CG=/sys/fs/cgroup/ckpt-$NODE
BIN=$S/bin

fail() {
	echo "FAIL $*"
	ps -eo pid,ppid,stat,args
	exit 1
}
say() { echo "$(date +%T) $NODE: $*"; }

# The user's delegated cgroup, as systemd's Delegate=yes makes it; its
# name differs per node, so every path of the job's cgroups does.
mkdir -p "$CG"
chown "$USER_UID:$USER_GID" "$CG" "$CG/cgroup.procs" "$CG/cgroup.threads" "$CG/cgroup.subtree_control"
mkdir -p /tmp/scratch
chown "$USER_UID:$USER_GID" /tmp/scratch
hostname >"$S/$NODE.hostname"

# as_user CMD...: runs CMD as the user in its cgroup.
as_user() {
	bash -c 'echo $$ >"$0/cgroup.procs" && exec setpriv --reuid="$1" --regid="$2" --clear-groups env -i PATH=/usr/bin:/bin HOME="$3" "${@:4}"' \
		"$CG" "$USER_UID" "$USER_GID" "$J" "$@"
}
# step NAME CMD...: runs CMD as the user, recording output and status.
step() {
	local name=$1
	shift
	as_user "$@" >"$S/$NODE.$name.out" 2>&1
	local st=$?
	echo $st >"$S/$NODE.$name.status"
	return $st
}
# start NAME CMD...: like step, in the background; its pid in $started.
start() {
	local name=$1
	shift
	as_user "$@" >"$S/$NODE.$name.out" 2>&1 &
	started=$!
}
# finish NAME PID: waits for a started command and records its status.
finish() {
	wait "$2"
	local st=$?
	echo $st >"$S/$NODE.$1.status"
	return $st
}
# wait_for SECONDS COMMAND...: polls until COMMAND succeeds.
wait_for() {
	local n=$(($1 * 4))
	shift
	until "$@"; do
		n=$((n - 1))
		((n > 0)) || return 1
		sleep 0.25
	done
}
# ready MARKER PEER: the peer node left MARKER, or finished without it.
ready() { [[ -e $S/$1 || -e $S/$2.exit ]]; }
# await MARKER PEER: waits for the peer's marker; fails when it never came.
await() {
	wait_for 600 ready "$1" "$2"
	[[ -e $S/$1 ]] || fail "$2 ended without $1: $(tail -n 3 "$S/$2.out")"
}
lines() { if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi; }
has_lines() { (($(lines "$1") >= $2)); }
# progress LOG LINES PID: LOG has LINES lines, or PID ended.
progress() { has_lines "$1" "$2" || ! kill -0 "$3" 2>/dev/null; }

# launch_ckpt NAME LINES CMD...: launches a job, lets it log LINES lines,
# then checkpoints it with --kill.
launch_ckpt() {
	local name=$1 want=$2
	shift 2
	start "$name.launch" "$BIN/ckpt-apptainer" launch --ckpt-dir "$J/$name.ckpt" -- "$@"
	local sup=$started
	wait_for 300 progress "$J/$name.log" "$want" "$sup"
	has_lines "$J/$name.log" "$want" ||
		fail "$name logged $(lines "$J/$name.log") lines, want $want; launch: $(cat "$S/$NODE.$name.launch.out")"
	step "$name.checkpoint" "$BIN/ckpt-apptainer" checkpoint --ckpt-dir "$J/$name.ckpt" --kill ||
		fail "checkpoint of $name: $(cat "$S/$NODE.$name.checkpoint.out")"
	finish "$name.launch" "$sup"
	step "$name.inspect" "$BIN/ckpt-apptainer" inspect --ckpt-dir "$J/$name.ckpt"
	say "$name checkpointed after $(lines "$J/$name.log") lines"
}

case $NODE in
node-a)
	launch_ckpt c 30 "$BIN/nodelocal" "$J/c.log" "$TICKS" /tmp/scratch
	launch_ckpt py 20 "$PYTHON" "$BIN/mp_shm.py" "$J/py.log" "$TICKS"
	touch "$S/a-jobs-ready"
	await b-avx-ready node-b
	step avx.restart "$BIN/ckpt-apptainer" restart --ckpt-dir "$J/avx.ckpt"
	say "restart of the AVX job exited $(cat "$S/$NODE.avx.restart.status")"
	touch "$S/a-avx-tried"
	;;
node-b)
	launch_ckpt avx 10 "$BIN/avx" "$J/avx.log" "$AVX_SECONDS"
	touch "$S/b-avx-ready"
	await a-jobs-ready node-a
	start c.restart "$BIN/ckpt-apptainer" restart --ckpt-dir "$J/c.ckpt"
	c=$started
	start py.restart "$BIN/ckpt-apptainer" restart --ckpt-dir "$J/py.ckpt"
	py=$started
	finish c.restart "$c"
	finish py.restart "$py"
	say "node-a's jobs ended: $(cat "$S/$NODE.c.restart.status") $(cat "$S/$NODE.py.restart.status")"
	await a-avx-tried node-a
	step avx.restart "$BIN/ckpt-apptainer" restart --ckpt-dir "$J/avx.ckpt"
	say "the AVX job ended: $(cat "$S/$NODE.avx.restart.status")"
	;;
*) fail "unknown node $NODE" ;;
esac
say done
