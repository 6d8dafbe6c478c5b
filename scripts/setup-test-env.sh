#!/usr/bin/env bash
# setup-test-env.sh prepares this machine for the unprivileged tests. Run it as
# root; it is idempotent.
# Last, it fetches the kernel the kernel matrix boots (scripts/fetch-kernels.sh)
# and builds the container test images with scripts/build-test-images.sh
# (both cached: instant when they are already there).
#
# It creates the test user ckpt-user and delegates cgroups to it the way
# systemd's Delegate=yes does, on whichever hierarchies are mounted (found in
# /proc/self/mountinfo, never assumed):
#
#   <v2>/ckpt-test/ckpt-user      owned by ckpt-user (dir, cgroup.procs,
#                                 cgroup.threads, cgroup.subtree_control)
#   <v2>/ckpt-test/root           for tests that run as root
#   <freezer>/ckpt-test/ckpt-user owned by ckpt-user (dir, tasks, cgroup.procs,
#                                 freezer.state)
#   <freezer>/ckpt-test/root      for tests that run as root
#
# and writes the paths to /run/ckpt-apptainer-test.env as shell assignments
# (CKPT_TEST_USER, CKPT_TEST_V2_ROOT, CKPT_TEST_V2_USER, CKPT_TEST_V1_ROOT,
# CKPT_TEST_V1_USER, CKPT_TEST_V2_CONTROLLERS; empty when a hierarchy is absent).
#
# How a test starts an unprivileged process inside its delegated cgroups: the
# kernel lets a process move another one only when it can write cgroup.procs
# of the common ancestor of the source and destination cgroups (cgroup v2). A
# process started by root sits in a root-owned cgroup, so the user could not
# move it. Root therefore places the process first, exactly as systemd starts a
# user session inside the delegated cgroup, and then drops to the user:
#
#   sh -c 'echo $$ > "$CKPT_TEST_V2_USER/cgroup.procs" &&
#          echo $$ > "$CKPT_TEST_V1_USER/cgroup.procs" &&
#          exec runuser -u ckpt-user -- CMD...'
#
# (leave out the line of an absent hierarchy). CMD then runs in ckpt-user's
# cgroups and may create job cgroups below them, move its children there and
# freeze them. Use `runuser -u`, not `runuser -l`: the login variant runs
# pam_systemd, which would move the process into a session scope elsewhere.
# From Go, exec.Cmd with SysProcAttr.UseCgroupFD places a child into a v2 cgroup
# directly; the v1 freezer still needs the write above.
set -euo pipefail

TEST_USER=ckpt-user
ENV_FILE=/run/ckpt-apptainer-test.env

say() { printf '==> %s\n' "$*"; }
die() {
	printf 'setup-test-env: %s\n' "$*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root"

# cgroup_mount prints the mount point of the first mount whose filesystem type
# is $1 and, when $2 is given, whose super options contain the word $2.
cgroup_mount() {
	awk -v fs="$1" -v opt="${2:-}" '
		{
			for (i = 7; i <= NF && $i != "-"; i++) {}
			if ($(i + 1) != fs) next
			if (opt != "") {
				n = split($(i + 3), o, ",")
				ok = 0
				for (j = 1; j <= n; j++) if (o[j] == opt) ok = 1
				if (!ok) next
			}
			# Mount points escape spaces as \040.
			gsub(/\\040/, " ", $5)
			print $5
			exit
		}
	' /proc/self/mountinfo
}

ensure_user() {
	if id -u "$TEST_USER" >/dev/null 2>&1; then
		say "user $TEST_USER exists (uid $(id -u "$TEST_USER"))"
	else
		useradd -m -s /bin/bash "$TEST_USER"
		say "created user $TEST_USER (uid $(id -u "$TEST_USER"))"
	fi
}

V2_MNT=$(cgroup_mount cgroup2)
V1_MNT=$(cgroup_mount cgroup freezer)
V2_ROOT="" V2_USER="" V1_ROOT="" V1_USER="" V2_CONTROLLERS=""

setup_v2() {
	[[ -n $V2_MNT ]] || {
		say "no cgroup v2 hierarchy mounted; skipping v2"
		return 0
	}
	local base=$V2_MNT/ckpt-test
	mkdir -p "$base"
	# Hand the controllers the machine already enables at the top down to the
	# test cgroups, as systemd does for a delegated unit. Best effort: a
	# controller that cannot be enabled only narrows what the tests can record.
	local c
	# shellcheck disable=SC2013 # the file is a space-separated list of names
	for c in $(cat "$base/cgroup.controllers"); do
		case $c in
		cpu | cpuset | io | memory | pids)
			if echo "+$c" >"$base/cgroup.subtree_control" 2>/dev/null; then
				V2_CONTROLLERS+="${V2_CONTROLLERS:+ }$c"
			fi
			;;
		esac
	done
	mkdir -p "$base/$TEST_USER" "$base/root"
	chown "$TEST_USER:" "$base/$TEST_USER" "$base/$TEST_USER/cgroup.procs" \
		"$base/$TEST_USER/cgroup.threads" "$base/$TEST_USER/cgroup.subtree_control"
	V2_ROOT=$base/root
	V2_USER=$base/$TEST_USER
}

setup_v1() {
	[[ -n $V1_MNT ]] || {
		say "no cgroup v1 freezer hierarchy mounted; skipping v1"
		return 0
	}
	local base=$V1_MNT/ckpt-test
	mkdir -p "$base/$TEST_USER" "$base/root"
	# freezer.state too, so the user can also freeze its delegated cgroup itself;
	# the cgroups it creates below are its own anyway.
	chown "$TEST_USER:" "$base/$TEST_USER" "$base/$TEST_USER/tasks" \
		"$base/$TEST_USER/cgroup.procs" "$base/$TEST_USER/freezer.state"
	V1_ROOT=$base/root
	V1_USER=$base/$TEST_USER
}

setup_fuse() {
	if [[ ! -e /dev/fuse ]]; then
		modprobe fuse 2>/dev/null || true
	fi
	[[ -c /dev/fuse ]] || die "/dev/fuse is missing (no fuse module?)"
	chmod 0666 /dev/fuse
	say "/dev/fuse is mode 0666"
	# pasta and slirp4netns open /dev/net/tun to give a job's private
	# network a way out; distributions make it 0666, some images 0600.
	if [[ -c /dev/net/tun ]]; then
		chmod 0666 /dev/net/tun
		say "/dev/net/tun is mode 0666"
	fi
}

check_userns() {
	local max
	max=$(cat /proc/sys/user/max_user_namespaces)
	[[ $max -gt 0 ]] || die "user.max_user_namespaces is 0: unprivileged user namespaces are off"
	if [[ -e /proc/sys/kernel/unprivileged_userns_clone ]] &&
		[[ $(cat /proc/sys/kernel/unprivileged_userns_clone) == 0 ]]; then
		die "kernel.unprivileged_userns_clone is 0: unprivileged user namespaces are off"
	fi
	runuser -u "$TEST_USER" -- unshare --user --map-root-user --pid --fork --mount-proc true ||
		die "$TEST_USER cannot create user+pid+mount namespaces"
	say "$TEST_USER can create user, pid and mount namespaces"
}

# assign prints NAME=VALUE, quoted only when the value needs it, so that both a
# shell and a plain KEY=VALUE parser read it.
assign() {
	if [[ $2 =~ ^[A-Za-z0-9_./:@+-]*$ ]]; then
		printf '%s=%s\n' "$1" "$2"
	else
		printf '%s=%q\n' "$1" "$2"
	fi
}

write_env() {
	{
		echo "# Written by scripts/setup-test-env.sh; paths of the delegated test cgroups."
		assign CKPT_TEST_USER "$TEST_USER"
		assign CKPT_TEST_V2_ROOT "$V2_ROOT"
		assign CKPT_TEST_V2_USER "$V2_USER"
		assign CKPT_TEST_V1_ROOT "$V1_ROOT"
		assign CKPT_TEST_V1_USER "$V1_USER"
		assign CKPT_TEST_V2_CONTROLLERS "$V2_CONTROLLERS"
	} >"$ENV_FILE.tmp"
	mv "$ENV_FILE.tmp" "$ENV_FILE"
	chmod 0644 "$ENV_FILE"
}

# verify_as_user starts a shell as the test user inside its delegated cgroups
# (placed there by root, as the tests do) and checks that the user can create
# a child cgroup, move a process into it, freeze and thaw it, and remove it.
verify_as_user() {
	local script
	# shellcheck disable=SC2016 # expanded by the inner shell
	script='
		set -eu
		sleep 60 &
		pid=$!
		trap "kill $pid 2>/dev/null || true" EXIT
		if [ -n "$V2" ]; then
			mkdir -p "$V2/verify"
			echo $pid >"$V2/verify/cgroup.procs"
			echo 1 >"$V2/verify/cgroup.freeze"
			i=0
			until grep -qx "frozen 1" "$V2/verify/cgroup.events"; do
				i=$((i + 1)); [ $i -lt 50 ] || { echo "v2: not frozen" >&2; exit 1; }
				sleep 0.1
			done
			echo 0 >"$V2/verify/cgroup.freeze"
			echo "v2: moved pid $pid into $V2/verify, froze and thawed it"
		fi
		if [ -n "$V1" ]; then
			mkdir -p "$V1/verify"
			echo $pid >"$V1/verify/cgroup.procs"
			echo FROZEN >"$V1/verify/freezer.state"
			i=0
			until grep -qx FROZEN "$V1/verify/freezer.state"; do
				i=$((i + 1)); [ $i -lt 50 ] || { echo "v1: not frozen" >&2; exit 1; }
				sleep 0.1
			done
			echo THAWED >"$V1/verify/freezer.state"
			echo "v1: moved pid $pid into $V1/verify, froze and thawed it"
		fi
		kill $pid
		wait $pid 2>/dev/null || true
		trap - EXIT
		if [ -n "$V2" ]; then rmdir "$V2/verify"; fi
		if [ -n "$V1" ]; then rmdir "$V1/verify"; fi
	'
	# The outer shell runs as root, places itself, then becomes the user.
	# shellcheck disable=SC2016
	V2=$V2_USER V1=$V1_USER sh -c '
		if [ -n "$V2" ]; then echo $$ >"$V2/cgroup.procs"; fi
		if [ -n "$V1" ]; then echo $$ >"$V1/cgroup.procs"; fi
		exec runuser -u "$0" -- env V2="$V2" V1="$V1" sh -c "$1"
	' "$TEST_USER" "$script" | sed 's/^/    /' ||
		die "$TEST_USER cannot use its delegated cgroups"
}

ensure_user
setup_v2
setup_v1
setup_fuse
check_userns
write_env
say "test user:        $TEST_USER"
say "v2 root cgroup:   ${V2_ROOT:-(no cgroup v2)}"
say "v2 user cgroup:   ${V2_USER:-(no cgroup v2)}${V2_CONTROLLERS:+ (controllers: $V2_CONTROLLERS)}"
say "v1 root freezer:  ${V1_ROOT:-(no v1 freezer)}"
say "v1 user freezer:  ${V1_USER:-(no v1 freezer)}"
verify_as_user
say "wrote $ENV_FILE"

# The kernel make test boots under qemu (Debian 11's 5.10, the oldest of the
# matrix); cached afterwards. make test-kernels fetches the others.
"$(dirname "${BASH_SOURCE[0]}")/fetch-kernels.sh" 5.10

# The container tests' images (python3.sif); built once, cached afterwards.
# Without Apptainer there is nothing to build them for: those tests then skip
# (or fail under CKPT_REQUIRE_APPTAINER=1) and name this script.
if command -v apptainer >/dev/null 2>&1; then
	"$(dirname "${BASH_SOURCE[0]}")/build-test-images.sh"
else
	say "apptainer not installed; container test images not built"
fi
