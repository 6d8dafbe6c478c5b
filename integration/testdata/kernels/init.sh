#!/bin/busybox sh
# init.sh is PID 1 of the kernel matrix's guest (integration/kernels_test.go):
# a busybox initramfs with the static ckpt-apptainer and static suite
# programs, booted under qemu with one of the kernels clusters run. It runs
# the end-to-end scenario once per flavor and reports on the second serial
# port (/dev/ttyS1), which the host reads:
#
#   RESULT <name> ok|FAIL <why>
#   BEGIN <name> <file> ... END <name> <file>    a file of the scenario
#
# then powers the machine off. The kernel's own console is ttyS0.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mkdir -p /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# Debian's kernels before 6.x gate unprivileged user namespaces.
[ -e /proc/sys/kernel/unprivileged_userns_clone ] && echo 1 >/proc/sys/kernel/unprivileged_userns_clone
chmod 1777 /tmp

OUT=/dev/ttyS1
UID_=1000
say() { echo "$*" >"$OUT"; }

# The unprivileged user's delegated cgroup, as systemd's Delegate=yes makes it.
mkdir -p /sys/fs/cgroup/user
chown "$UID_:$UID_" /sys/fs/cgroup/user /sys/fs/cgroup/user/cgroup.procs \
	/sys/fs/cgroup/user/cgroup.threads /sys/fs/cgroup/user/cgroup.subtree_control

# as WHO CMD...: runs CMD as root, or as the user inside its delegated cgroup.
as() {
	who=$1
	shift
	if [ "$who" = user ]; then
		sh -c 'echo $$ >/sys/fs/cgroup/user/cgroup.procs && exec /bin/runas 1000 1000 "$@"' sh "$@"
	else
		"$@"
	fi
}

# start WHO OUT CMD...: starts CMD in the background like as, its output
# in OUT, and sets sup to its pid (the command's own: it is exec'd).
start() {
	who=$1 out=$2
	shift 2
	if [ "$who" = user ]; then
		sh -c 'echo $$ >/sys/fs/cgroup/user/cgroup.procs && exec /bin/runas 1000 1000 "$@"' sh "$@" >"$out" 2>&1 &
	else
		"$@" >"$out" 2>&1 &
	fi
	sup=$!
}

# send NAME FILE: copies a file of the scenario to the host.
send() {
	say "BEGIN $1 $2"
	[ -f "$2" ] && cat "$2" >"$OUT"
	say "END $1 $2"
}

# wait_for SECONDS COMMAND...: polls until COMMAND succeeds.
wait_for() {
	n=$(($1 * 10))
	shift
	while ! "$@"; do
		n=$((n - 1))
		[ $n -gt 0 ] || return 1
		usleep 100000
	done
}

lines() { [ -f "$1" ] && wc -l <"$1" || echo 0; }
more_lines() { [ "$(lines "$1")" -ge "$2" ]; }
gone() { ! kill -0 "$1" 2>/dev/null; }
# no_prog PROG: no live process runs PROG. This shell is PID 1 and reaps
# only what it waits for, so the job's processes, orphaned when its PID
# namespace died, stay here as zombies: those do not count.
no_prog() {
	for p in $(pidof "$1"); do
		read -r _ _ state _ <"/proc/$p/stat" 2>/dev/null || continue
		[ "$state" = Z ] || return 1
	done
	return 0
}

# scenario NAME WHO CGROUP PROG [ARG]: launch with periodic checkpoints,
# SIGKILL of the supervisor, restart, checkpoint --kill, restart to the end.
# $flags are added to launch and restart; the first supervisor runs until
# generation $gens (1 when unset) is on disk; the job's second argument
# is $size (200 when unset).
flags=
gens=
size=
scenario() {
	name=$1 who=$2 cg=$3 prog=$4 arg=${5:-}
	d=/tmp/$name
	mkdir -p "$d"
	[ "$who" = user ] && chown "$UID_:$UID_" "$d"
	cgflag=
	[ "$cg" = none ] && cgflag=--no-cgroup
	log=$d/job.log
	fail() {
		say "RESULT $name FAIL $*"
		ps -o pid,ppid,stat,comm,args >"$d/ps.out" 2>&1
		for f in launch.out restart1.out restart2.out ckpt.out job.log ps.out; do send "$name" "$d/$f"; done
		[ -n "$sup" ] && kill -9 "$sup" 2>/dev/null
		killall -9 "$prog" 2>/dev/null
		return 1
	}
	sup=
	start "$who" "$d/launch.out" /bin/ckpt-apptainer launch --interval 2 --ckpt-dir "$d/ck" $cgflag $flags -- /bin/"$prog" "$log" ${size:-200} $arg
	wait_for 90 test -d "$d/ck/gen-00000${gens:-1}" || { fail "no checkpoint generation ${gens:-1}"; return; }
	n=$(lines "$log")
	wait_for 30 more_lines "$log" $((n + 8)) || { fail "the job made no progress after the first checkpoint"; return; }
	kill -9 "$sup"
	wait "$sup"
	wait_for 10 no_prog "$prog" || { fail "the job outlived its SIGKILLed supervisor"; return; }
	n=$(lines "$log")
	start "$who" "$d/restart1.out" /bin/ckpt-apptainer restart --ckpt-dir "$d/ck" $flags
	wait_for 60 more_lines "$log" $((n + 8)) || { fail "no progress after the first restart"; return; }
	as "$who" /bin/ckpt-apptainer checkpoint --ckpt-dir "$d/ck" --kill >"$d/ckpt.out" 2>&1 || { fail "checkpoint --kill failed"; return; }
	wait "$sup"
	st=$?
	[ $st = 143 ] || { fail "the supervisor of the first restart exited $st after checkpoint --kill, want 143"; return; }
	start "$who" "$d/restart2.out" /bin/ckpt-apptainer restart --ckpt-dir "$d/ck" $flags
	wait_for 120 gone "$sup" || { fail "the job did not finish after the second restart"; return; }
	wait "$sup"
	st=$?
	[ $st = 0 ] || { fail "the job's last supervisor exited $st, want 0"; return; }
	say "RESULT $name ok"
	for f in launch.out restart1.out restart2.out job.log; do send "$name" "$d/$f"; done
}

say "KERNEL $(uname -r)"
scenario root-v2-tree3 root v2 tree3
scenario user-v2-threads user v2 thread_masks
scenario root-none-threads root none thread_masks
scenario user-none-tree3 user none tree3
# Process-directed timer signals: the main thread takes them before it
# checks their rate, which a signal to another thread, late under emulation
# after a checkpoint's stop, would not be. Slack for 20 periods: a restore
# here takes a few hundred ms, which the job's clock counts and its timer,
# re-armed with the time it had left, does not.
scenario user-v2-timers user v2 posix_timer "signal 20"
# Incremental checkpoints, which on these kernels find the unchanged pages
# by their soft-dirty bits.
flags=--incremental gens=3
scenario user-v2-incr user v2 tree3
# A job that checks the checksum of all its memory at every step, changing
# a few pages per step: a page the soft-dirty bits wrongly called unchanged
# fails it.
size=16
scenario root-v2-incr-mem root v2 mem 300
flags= gens= size=

for who in root user; do
	as "$who" /bin/ckpt-apptainer check --json >/tmp/check-$who.json 2>/tmp/check-$who.err
	say "CHECK $who $?"
	send check /tmp/check-$who.json
	send check /tmp/check-$who.err
done
say "DONE"
sync
poweroff -f
