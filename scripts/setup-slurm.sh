#!/usr/bin/env bash
# setup-slurm.sh starts a single-node Slurm cluster on loopback for the
# integration tests, and stops it again. Run it as root on a Debian 12 machine
# where scripts/install-deps.sh (which installs slurmctld, slurmd, slurm-client
# and munge from the machine's own suite) has been run. It is idempotent and
# returns in well under a second when the cluster is already up.
#
#   scripts/setup-slurm.sh [start]   write the configuration, start munged,
#                                    slurmctld and slurmd, wait for the node
#   scripts/setup-slurm.sh stop      cancel all jobs, stop the daemons
#   scripts/setup-slurm.sh restart   stop, then start (jobs are cancelled)
#   scripts/setup-slurm.sh status    exit 0 when the cluster is up and usable
#
# The daemons are started directly, never through systemd or the packages' init
# scripts, so this works in containers and VMs without an init system. Their
# state, spool, logs and pid files live under /var/lib/ckpt-slurm and
# /run/ckpt-slurm; the configuration is /etc/slurm/slurm.conf (the path every
# Slurm command reads), plus /etc/slurm/cgroup.conf. munged is the system one
# (/etc/munge/munge.key, /run/munge/munge.socket.2): it is reused when it
# answers, started otherwise.
#
# The cluster: one node named after `hostname -s` at 127.0.0.1 with all its
# CPUs (CR_Core: one job per core unless it asks for more; memory is not
# allocated), and two partitions over it:
#
#   ckpt          Default, PriorityTier=1, GraceTime=$GRACE_TIME s. Its jobs are
#                 requeued when a ckpt-preempt job needs their CPUs: Slurm
#                 sends SIGCONT+SIGTERM to all of the job's processes, then
#                 SIGKILL after GraceTime.
#   ckpt-preempt  PriorityTier=10, never preempted. Submit here to preempt.
#
# Finished jobs stay visible to `scontrol show job` for a day (MinJobAge), which
# is how a test learns a job's final state and exit code: there is no slurmdbd,
# so sacct does not work. Every finished job is also logged, with its state and
# exit code, to /var/lib/ckpt-slurm/log/jobcomp.log.
#
# Submit as the test user from a directory it can write (the job's output
# file, slurm-JOBID.out, lands in the submission directory by default):
#
#   runuser -u ckpt-user -- sbatch --chdir=/tmp --wrap='exec sleep 60'
#   runuser -u ckpt-user -- sbatch --requeue -p ckpt script.sh
set -euo pipefail

PKGS=(slurmctld slurmd slurm-client munge)
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
CGROUP_CONF=$CONF_DIR/cgroup.conf
STATE_DIR=/var/lib/ckpt-slurm
RUN_DIR=/run/ckpt-slurm
LOG_DIR=$STATE_DIR/log
CTLD_PID=$RUN_DIR/slurmctld.pid
SLURMD_PID=$RUN_DIR/slurmd.pid
# Present when this script started munged (so `stop` stops only that one).
MUNGE_MARK=$RUN_DIR/munged.started
MUNGE_SOCKET=/run/munge/munge.socket.2
MUNGE_KEY=/etc/munge/munge.key
# Seconds a preempted ckpt job has between SIGTERM and SIGKILL.
GRACE_TIME=30
# Seconds a requeued job waits before it can start again (minus one).
CRED_EXPIRE=10
# Seconds to wait for the node to become idle.
START_TIMEOUT=60

say() { printf '==> %s\n' "$*"; }
die() {
	printf 'setup-slurm: %s\n' "$*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root"

NODE=$(hostname -s)
[[ -n $NODE ]] || die "hostname -s is empty"

pkg_installed() {
	[[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]
}

check_packages() {
	local p missing=()
	for p in "${PKGS[@]}"; do
		pkg_installed "$p" || missing+=("$p")
	done
	((${#missing[@]} == 0)) ||
		die "packages not installed: ${missing[*]}; run scripts/install-deps.sh (as root) first"
}

# pid_alive reports whether the pid file $1 names a live process whose command
# name is $2.
pid_alive() {
	local pid
	[[ -r $1 ]] || return 1
	pid=$(<"$1")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ $(ps -o comm= -p "$pid" 2>/dev/null) == "$2"* ]]
}

# stop_pidfile sends SIGTERM to the process in pid file $1 (command name $2),
# waits up to 15 s, then sends SIGKILL.
stop_pidfile() {
	local f=$1 name=$2 pid i
	pid_alive "$f" "$name" || {
		rm -f "$f"
		return 0
	}
	pid=$(<"$f")
	say "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 150; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "$name did not stop in 15 s; SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

munge_ok() {
	munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1
}

start_munge() {
	if munge_ok; then
		return 0
	fi
	install -d -o munge -g munge -m 0700 /etc/munge
	install -d -o munge -g munge -m 0755 /run/munge
	install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
	if [[ ! -s $MUNGE_KEY ]]; then
		say "creating $MUNGE_KEY"
		mungekey --create --keyfile="$MUNGE_KEY" --force
	fi
	chown munge:munge "$MUNGE_KEY"
	chmod 0400 "$MUNGE_KEY"
	# A stale socket or pid file from a killed munged makes it refuse to start.
	if [[ -e $MUNGE_SOCKET ]] && ! munge_ok; then
		rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" /run/munge/munged.pid
	fi
	say "starting munged"
	runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" ||
		die "munged did not start; log: $(tail -n 20 /var/log/munge/munged.log 2>/dev/null)"
	touch "$MUNGE_MARK"
	local i
	for ((i = 0; i < 50; i++)); do
		munge_ok && return 0
		sleep 0.1
	done
	die "munged does not answer; log: $(tail -n 20 /var/log/munge/munged.log 2>/dev/null)"
}

# cgroup_v1_freezer prints the mount point of the cgroup v1 freezer hierarchy,
# if there is one.
cgroup_v1_freezer() {
	awk '{
		for (i = 7; i <= NF && $i != "-"; i++) {}
		if ($(i + 1) == "cgroup" && $(i + 3) ~ /(^|,)freezer(,|$)/) { print $5; exit }
	}' /proc/self/mountinfo
}

# write_config writes slurm.conf and cgroup.conf to $1 and $2.
write_config() {
	local conf=$1 cgconf=$2 cpus mem_mb real_mb proctrack task_plugin freezer
	# The topology slurmd detects (CPUs, Boards, SocketsPerBoard, ...), so
	# that it does not log a mismatch; CPUs alone when it detects nothing.
	cpus=$(slurmd -C 2>/dev/null | sed -n '1{s/^NodeName=[^ ]* //;s/ RealMemory=.*//;p}')
	[[ $cpus == CPUs=* ]] || cpus="CPUs=$(nproc --all)"
	mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
	# Below the real size, or slurmd drains the node ("Low RealMemory").
	real_mb=$((mem_mb * 9 / 10))
	freezer=$(cgroup_v1_freezer)
	if [[ $freezer == /sys/fs/cgroup/freezer && -d /sys/fs/cgroup/memory && -d /sys/fs/cgroup/cpuset ]]; then
		# Hybrid or v1 layout: Slurm 22.05's cgroup/v1 plugin puts every job
		# in /sys/fs/cgroup/<ctrl>/slurm/uid_U/job_J/step_S, as on real
		# clusters, and signals the job through the freezer cgroup's tasks.
		proctrack=proctrack/cgroup
		task_plugin=task/cgroup,task/affinity
		cat >"$cgconf" <<-EOF
			# Written by ckpt-apptainer scripts/setup-slurm.sh.
			CgroupPlugin=cgroup/v1
			CgroupMountpoint=/sys/fs/cgroup
			ConstrainCores=no
			ConstrainRAMSpace=no
			ConstrainDevices=no
		EOF
	else
		# Pure cgroup v2: Slurm 22.05's cgroup/v2 plugin wants slurmd in a
		# systemd-delegated cgroup, which a machine without systemd does not
		# give it. linuxproc tracks the job's processes by parentage instead.
		proctrack=proctrack/linuxproc
		task_plugin=task/affinity
		cat >"$cgconf" <<-EOF
			# Written by ckpt-apptainer scripts/setup-slurm.sh (unused: proctrack/linuxproc).
			CgroupPlugin=autodetect
		EOF
	fi
	cat >"$conf" <<-EOF
		# Written by ckpt-apptainer scripts/setup-slurm.sh: a one-node test cluster
		# on loopback. Edits are overwritten; change the script instead.
		ClusterName=ckpt
		SlurmctldHost=$NODE(127.0.0.1)
		SlurmUser=slurm
		SlurmdUser=root
		AuthType=auth/munge
		CredType=cred/munge
		# A requeued job stays pending (Reason=BeginTime) for cred_expire + 1 s
		# after its old instance has ended (default 120 s). Also the lifetime of
		# a launch credential, which on one node is checked within milliseconds.
		AuthInfo=cred_expire=$CRED_EXPIRE
		StateSaveLocation=$STATE_DIR/ctld
		SlurmdSpoolDir=$STATE_DIR/slurmd
		SlurmctldPidFile=$CTLD_PID
		SlurmdPidFile=$SLURMD_PID
		SlurmctldLogFile=$LOG_DIR/slurmctld.log
		SlurmdLogFile=$LOG_DIR/slurmd.log
		SlurmctldDebug=info
		SlurmdDebug=info
		MailProg=/bin/true

		ProctrackType=$proctrack
		TaskPlugin=$task_plugin
		MpiDefault=none
		SwitchType=switch/none
		JobAcctGatherType=jobacct_gather/none
		AccountingStorageType=accounting_storage/none
		JobCompType=jobcomp/filetxt
		JobCompLoc=$LOG_DIR/jobcomp.log

		SchedulerType=sched/backfill
		# Schedule every 2 s (default 60 s and 30 s), so a requeued job
		# starts again seconds after its BeginTime, not a minute later.
		SchedulerParameters=sched_interval=2,bf_interval=2
		SelectType=select/cons_tres
		SelectTypeParameters=CR_Core
		# A node that was down (slurmd restarted) comes back by itself.
		ReturnToService=2
		JobRequeue=1
		# Seconds between the SIGTERM and the SIGKILL when a job is cancelled,
		# requeued or reaches its time limit.
		KillWait=10
		# Keep finished jobs in scontrol show job for a day.
		MinJobAge=86400
		InactiveLimit=0
		Waittime=0
		SlurmctldTimeout=120
		SlurmdTimeout=300

		PreemptType=preempt/partition_prio
		PreemptMode=REQUEUE

		NodeName=$NODE NodeAddr=127.0.0.1 $cpus RealMemory=$real_mb State=UNKNOWN
		PartitionName=ckpt Nodes=$NODE Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=$GRACE_TIME
		PartitionName=ckpt-preempt Nodes=$NODE MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
	EOF
}

# node_state prints the node's state as sinfo reports it (idle, mixed, ...).
node_state() {
	timeout 10 sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n 1
}

# healthy reports whether both daemons run and the node can take jobs.
healthy() {
	pid_alive "$CTLD_PID" slurmctld && pid_alive "$SLURMD_PID" slurmd || return 1
	timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP' || return 1
	case $(node_state) in
	idle | mixed | allocated | completing) return 0 ;;
	*) return 1 ;;
	esac
}

log_tail() {
	local f
	for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
		[[ -r $f ]] || continue
		printf -- '--- last lines of %s\n' "$f" >&2
		tail -n 20 "$f" >&2
	done
}

stop_daemons() {
	stop_pidfile "$SLURMD_PID" slurmd
	stop_pidfile "$CTLD_PID" slurmctld
	# Daemons started by the Debian packages' init scripts or units would
	# hold the same ports.
	stop_pidfile /run/slurmd.pid slurmd
	stop_pidfile /run/slurmctld.pid slurmctld
}

# cancel_jobs cancels every job and waits (bounded) until none is running.
cancel_jobs() {
	local ids i
	timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP' || return 0
	ids=$(timeout 10 squeue -h -o '%i' 2>/dev/null || true)
	[[ -n $ids ]] || return 0
	say "cancelling jobs: $(tr '\n' ' ' <<<"$ids")"
	# shellcheck disable=SC2086 # one argument per job id
	scancel $ids 2>/dev/null || true
	for ((i = 0; i < 30; i++)); do
		[[ -z $(timeout 10 squeue -h -t running,completing -o '%i' 2>/dev/null) ]] && return 0
		sleep 1
	done
	say "jobs still running after 30 s"
}

# disable_package_services keeps the packages' own services from starting
# daemons next to ours (with systemd at boot, or by invoke-rc.d on install).
disable_package_services() {
	local s
	if [[ -d /run/systemd/system ]]; then
		for s in slurmctld slurmd; do
			if systemctl is-enabled --quiet "$s" 2>/dev/null || systemctl is-active --quiet "$s" 2>/dev/null; then
				say "disabling the package's $s.service (this script runs the daemons)"
				systemctl disable --now "$s" >/dev/null 2>&1 || true
			fi
		done
	fi
}

start() {
	check_packages
	install -d -m 0755 "$RUN_DIR" "$STATE_DIR" "$CONF_DIR"
	install -d -o slurm -g slurm -m 0755 "$STATE_DIR/ctld" "$LOG_DIR"
	install -d -m 0755 "$STATE_DIR/slurmd"

	local tmp tmpcg changed=0
	tmp=$(mktemp "$CONF.XXXXXX")
	tmpcg=$(mktemp "$CGROUP_CONF.XXXXXX")
	write_config "$tmp" "$tmpcg"
	chmod 0644 "$tmp" "$tmpcg"
	if ! cmp -s "$tmp" "$CONF" || ! cmp -s "$tmpcg" "$CGROUP_CONF"; then
		changed=1
		mv "$tmp" "$CONF"
		mv "$tmpcg" "$CGROUP_CONF"
		say "wrote $CONF and $CGROUP_CONF"
	else
		rm -f "$tmp" "$tmpcg"
	fi

	start_munge
	if ((changed == 0)) && healthy; then
		say "Slurm already running (node $NODE $(node_state))"
		return 0
	fi

	disable_package_services
	# Running daemons with an old configuration or a stuck node: start over.
	# slurmctld keeps its state (jobs) across this; running jobs survive a
	# slurmd restart.
	stop_daemons
	say "starting slurmctld"
	slurmctld || {
		log_tail
		die "slurmctld did not start"
	}
	say "starting slurmd"
	slurmd -N "$NODE" || {
		log_tail
		die "slurmd did not start"
	}

	local i state=""
	for ((i = 0; i < START_TIMEOUT * 2; i++)); do
		state=$(node_state || true)
		case $state in
		idle | mixed | allocated) break ;;
		esac
		sleep 0.5
	done
	case $state in
	idle | mixed | allocated) ;;
	*)
		scontrol show node "$NODE" >&2 2>/dev/null || true
		log_tail
		die "node $NODE is '${state:-unknown}', not idle, after ${START_TIMEOUT} s"
		;;
	esac
	say "Slurm $(sinfo -V | awk '{print $2}') up: node $NODE $state, partitions ckpt (default) and ckpt-preempt"
	cat <<-EOF
		    submit:  runuser -u ckpt-user -- sbatch --chdir=/tmp --wrap='exec sleep 60'
		    watch:   squeue; scontrol show job JOBID
		    logs:    $LOG_DIR/{slurmctld,slurmd,jobcomp}.log
		    stop:    $0 stop
	EOF
}

stop() {
	cancel_jobs
	stop_daemons
	if [[ -e $MUNGE_MARK ]]; then
		say "stopping munged"
		munged --stop --socket="$MUNGE_SOCKET" >/dev/null 2>&1 || true
		rm -f "$MUNGE_MARK"
	fi
	say "Slurm stopped"
}

case ${1:-start} in
start) start ;;
stop) stop ;;
restart)
	stop
	start
	;;
status)
	if healthy; then
		say "Slurm running (node $NODE $(node_state))"
	else
		say "Slurm not running or node not usable"
		exit 1
	fi
	;;
*) die "usage: $0 [start|stop|restart|status]" ;;
esac
