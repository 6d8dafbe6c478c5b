#!/usr/bin/env bash
# gpu-test.sh checkpoints and restarts GPU jobs on a machine with an NVIDIA
# GPU (driver r550 or later) and python3 with torch:
#
#   scripts/gpu-test.sh [BIN_DIR]
#
# BIN_DIR holds ckpt-apptainer and ckpt-apptainer-cuda (default: bin, as
# `make build` leaves them). For a job on the CUDA driver API
# (gpu/driver_job.py: a value kept in device memory, checked every step)
# and a torch job (gpu/torch_job.py: a GPU tensor checked against a CPU
# replay every step), as root and as an unprivileged user: launch with
# periodic checkpoints (the job must go on on the GPU after each), SIGKILL
# of the supervisor, restart, `checkpoint --kill`, restart, SIGTERM; then
# every step must be in the job's output exactly once, and never a
# MISMATCH. GPU_TEST_BENCH=1 instead prints a table of the driver's and
# our times for torch jobs holding GPU_TEST_BENCH_MIB (default "1024 16384")
# of device memory (`make bench` runs it where there is a GPU).
# GPU_TEST_SIF=IMAGE adds the driver-API job in
# `apptainer exec --nv IMAGE` (an image with python3). GPU_TEST_DRY=1 runs the same sequence on a CPU-only job
# (gpu/cpu_job.py), to check the script where there is no GPU.
# GPU_TEST_BIG_MIB=16384 adds a torch job holding that much
# device memory, for the timings. Output: one line per phase, the
# supervisors' logs under $GPU_TEST_DIR (default /tmp/ckpt-gpu-test), and
# a summary of the driver's and our timings at the end.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "${1:-$here/../bin}" && pwd)
work=${GPU_TEST_DIR:-/tmp/ckpt-gpu-test}
user=${GPU_TEST_USER:-ckpt-gpu}
failed=0

rm -rf "$work"
mkdir -p "$work/bin"
cp "$bin/ckpt-apptainer" "$bin/ckpt-apptainer-cuda" "$here"/gpu/*_job.py "$work/bin/"
chmod -R a+rX "$work"
chmod 1777 "$work"
tool=$work/bin/ckpt-apptainer

if [ -z "${GPU_TEST_DRY:-}" ]; then
	[ -e /proc/driver/nvidia/version ] || { echo "gpu-test: no NVIDIA driver here" >&2; exit 2; }
	head -1 /proc/driver/nvidia/version
fi
if [ "$(id -u)" -eq 0 ] && ! id "$user" >/dev/null 2>&1; then
	useradd -m "$user" || echo "gpu-test: could not create user $user; unprivileged cases skipped" >&2
fi

# as USER CMD... runs CMD as USER (root: as is).
as() {
	local u=$1
	shift
	if [ "$u" = root ]; then "$@"; else su -s /bin/bash "$u" -c "$(printf '%q ' "$@")"; fi
}

# steps FILE prints the last step number written to FILE.
steps() { awk '/^step /{n=$2} END{print n+0}' "$1" 2>/dev/null || echo 0; }

# wait_steps FILE N waits until FILE's job has reached step N.
wait_steps() {
	local t=0
	until [ "$(steps "$1")" -ge "$2" ]; do
		sleep 0.5
		t=$((t + 1))
		if [ $t -gt 240 ]; then echo "    timed out waiting for step $2 (at $(steps "$1"))"; return 1; fi
		if grep -qs MISMATCH "$1"; then grep MISMATCH "$1"; return 1; fi
	done
}

# wait_gen DIR N waits until the checkpoint directory DIR has generation N.
wait_gen() {
	local t=0
	until [ -d "$1/gen-$(printf %06d "$2")" ]; do
		sleep 0.5
		t=$((t + 1))
		[ $t -le 240 ] || { echo "    timed out waiting for generation $2"; return 1; }
	done
}

# wait_exit PID waits for a background supervisor and leaves its exit
# status in $status.
wait_exit() {
	status=0
	wait "$1" || status=$?
}

# ms prints the time in milliseconds.
ms() { echo $(($(date +%s%N) / 1000000)); }

# restart_job LOG restarts the job of run_case (its variables d, u, ck,
# out, n in scope) in the background, logging to $d/LOG.log, and waits for
# 5 new steps; sup is the new supervisor.
restart_job() {
	local t0
	t0=$(ms)
	(cd "$d" && as "$u" "$tool" restart --ckpt-dir "$ck" --interval 0) >"$d/$1.log" 2>&1 &
	sup=$!
	wait_steps "$out" $((n + 1)) || { tail -20 "$d/$1.log"; return 1; }
	echo "   $1: first new step $(($(ms) - t0)) ms after the restart began"
	wait_steps "$out" $((n + 5))
}

# run_case NAME USER SCRIPT [ARGS...] runs python3 SCRIPT OUT ARGS... as a
# job through the whole sequence.
run_case() {
	local name=$1 u=$2 script=$3
	shift 3
	local d=$work/$name out=$work/$name/out ck=$work/$name/ckpt
	mkdir -p "$d"
	# The checkpoint directory's parents must be writable by its owner
	# and root alone.
	[ "$u" = root ] || chown "$u" "$d"
	echo "== $name as $u"
	local sup n
	(cd "$d" && as "$u" "$tool" launch --ckpt-dir "$ck" --interval 6 -- "${runner[@]}" "$script" "$out" "$@") >"$d/launch.log" 2>&1 &
	sup=$!
	wait_steps "$out" 5 || return 1
	wait_gen "$ck" 1 || return 1
	n=$(steps "$out")
	wait_steps "$out" $((n + 5)) || return 1
	echo "   periodic checkpoint 1 taken; the job went on on the GPU to step $(steps "$out")"
	pkill -KILL -f "$tool launch --ckpt-dir $ck" || true
	wait "$sup" 2>/dev/null || true
	sleep 2
	n=$(steps "$out")
	echo "   supervisor killed at step $n"
	restart_job restart1 || return 1
	as "$u" "$tool" checkpoint --ckpt-dir "$ck" --kill >"$d/checkpoint.log" 2>&1 || { cat "$d/checkpoint.log"; return 1; }
	wait_exit "$sup"
	n=$(steps "$out")
	echo "   checkpoint --kill at step $n: supervisor exit status $status"
	[ "$status" -eq 143 ] || return 1
	restart_job restart2 || return 1
	pkill -TERM -f "$tool restart --ckpt-dir $ck" || true
	wait_exit "$sup"
	echo "   SIGTERM: supervisor exit status $status"
	[ "$status" -eq 143 ] || return 1
	if grep -q MISMATCH "$out"; then grep MISMATCH "$out"; return 1; fi
	n=$(steps "$out")
	if ! awk -v n="$n" '/^step /{c[$2]++} END{for(i=1;i<=n;i++) if(c[i]!=1){print "    step " i " appears " c[i]+0 " times"; bad=1} exit bad}' "$out"; then
		return 1
	fi
	echo "   ok: steps 1..$n each once, device state verified every step"
	as "$u" "$tool" inspect --ckpt-dir "$ck" | awk '/^gpu/{p=1; print "   " $0; next} p && /^  /{print "   " $0; next} {p=0}'
	grep -h "GPU:" "$d"/*.log | sed 's/^/   /' | head -8 || true
}

# bench_case MIB runs the torch job holding MIB of device memory, as root:
# checkpoint --kill and restart, and prints one row of the GPU table.
bench_case() {
	local mib=$1 d=$work/bench-$1 out=$work/bench-$1/out ck=$work/bench-$1/ckpt sup n t0 js
	mkdir -p "$d"
	local job=torch
	[ -z "${GPU_TEST_DRY:-}" ] || job=cpu
	(cd "$d" && "$tool" launch --ckpt-dir "$ck" --interval 0 -- python3 "$work/bin/${job}_job.py" "$out" "$mib") >"$d/launch.log" 2>&1 &
	sup=$!
	wait_steps "$out" 3 || return 1
	js=$("$tool" checkpoint --ckpt-dir "$ck" --kill --json) || return 1
	wait "$sup" || true
	n=$(steps "$out")
	t0=$(ms)
	(cd "$d" && "$tool" restart --ckpt-dir "$ck" --interval 0) >"$d/restart.log" 2>&1 &
	sup=$!
	wait_steps "$out" $((n + 1)) || return 1
	local first=$(($(ms) - t0))
	"$tool" checkpoint --ckpt-dir "$ck" --kill >/dev/null 2>&1 || true
	wait "$sup" || true
	"$tool" inspect --ckpt-dir "$ck" --json 1 >"$d/inspect.json" || return 1
	python3 - "$mib" "$js" "$d/inspect.json" "$d/restart.log" "$first" <<'PY'
import json, re, sys
mib, ck, insp, log, first = sys.argv[1], json.loads(sys.argv[2]), json.load(open(sys.argv[3])), open(sys.argv[4]).read(), int(sys.argv[5])
gp = (insp["manifest"].get("gpu") or {}).get("processes") or [{}]
lock = sum(p.get("lock_ns", 0) for p in gp) / 1e9
cp = sum(p.get("checkpoint_ns", 0) for p in gp) / 1e9
back = re.search(r"back on the GPU in ([0-9.]+m?s)", log)
print(f"| {mib} MiB | {lock + cp:.2f} s | {ck['duration_ns'] / 1e9:.2f} s | {ck['stopped_ns'] / 1e9:.2f} s | "
      f"{ck['bytes'] / 2**30:.1f} GiB | {back.group(1) if back else '?'} | {first / 1000:.2f} s |")
PY
}

if [ -n "${GPU_TEST_BENCH:-}" ]; then
	echo "| torch job | driver lock + checkpoint | our checkpoint --kill | job stopped | page data | driver restore + unlock | restart to first step |"
	echo "|---|---:|---:|---:|---:|---:|---:|"
	for mib in ${GPU_TEST_BENCH_MIB:-1024 16384}; do
		bench_case "$mib" || { echo "| $mib MiB | failed: see $work/bench-$mib |"; failed=1; }
	done
	exit $failed
fi

jobs=(driver torch)
[ -z "${GPU_TEST_DRY:-}" ] || jobs=(cpu)
cases=()
for job in "${jobs[@]}"; do
	cases+=("$job:root")
	if id "$user" >/dev/null 2>&1; then cases+=("$job:$user"); fi
done
runner=(python3)
for c in "${cases[@]}"; do
	job=${c%%:*} u=${c#*:}
	if ! run_case "$job-$u" "$u" "$work/bin/${job}_job.py"; then
		echo "   FAILED ($work/$job-$u)"
		failed=1
	fi
done
# GPU_TEST_SIF, an image with python3 (and torch for the torch job), adds
# the driver-API job in `apptainer exec --nv`.
if [ -n "${GPU_TEST_SIF:-}" ] && command -v apptainer >/dev/null; then
	runner=(apptainer exec --nv "$GPU_TEST_SIF" python3)
	[ -z "${GPU_TEST_DRY:-}" ] || runner=(apptainer exec "$GPU_TEST_SIF" python3)
	job=${jobs[0]}
	for u in "$user" root; do
		id "$u" >/dev/null 2>&1 || continue
		[ "$u" = root ] && runner=("${runner[0]}" "${runner[1]}" --userns "${runner[@]:2}")
		if ! run_case "$job-nv-$u" "$u" "$work/bin/${job}_job.py"; then
			echo "   FAILED ($work/$job-nv-$u)"
			failed=1
		fi
	done
fi
runner=(python3)
if [ -n "${GPU_TEST_BIG_MIB:-}" ]; then
	run_case "torch-big" root "$work/bin/torch_job.py" "$GPU_TEST_BIG_MIB" || { echo "   FAILED"; failed=1; }
fi
exit $failed
