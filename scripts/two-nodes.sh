#!/usr/bin/env bash
# two-nodes.sh boots two virtual machines, "node-a" and "node-b", under qemu
# with software emulation, to run a job on one node and restart it on the
# other, as a Slurm requeue does:
#
#   scripts/two-nodes.sh KERNEL SHARED SCRIPT
#
# Both boot Debian kernel KERNEL (scripts/fetch-kernels.sh NAME) from a
# busybox initramfs (lib/node-init.sh) and take the host's root, read-only,
# as their own, with their own hostname, pids, cgroups, /tmp, /dev/shm and
# /run. SHARED, a host directory, is shared read-write between them at the
# same path (9p, like a cluster's shared file system). Each runs SCRIPT
# (a path the host's root has) with bash as root, its node name as the
# argument, its output in SHARED/NAME.out and its exit status in
# SHARED/NAME.exit; the qemu consoles go to SHARED/NAME.console.
#
# The nodes' CPUs differ: NODE_A_CPU (default: qemu's emulated CPU without
# AVX2, named as an older model) and NODE_B_CPU (default max: all qemu's
# emulation can do, AVX2 included; it cannot emulate AVX-512). Both enable
# the same register state (XSAVE components), as nodes of one cluster
# generation do; a node enabling more refuses jobs of one enabling less.
# NODE_TIMEOUT (seconds, default 900) bounds each. Run as root: qemu shares the directories with the guests'
# owners.
set -euo pipefail

die() {
	printf 'two-nodes: %s\n' "$*" >&2
	exit 1
}

(($# == 3)) || die "usage: two-nodes.sh KERNEL SHARED SCRIPT"
KERNEL=$1 SHARED=$(realpath "$2") SCRIPT=$3
CACHE_DIR=${CKPT_TEST_CACHE_DIR:-/var/cache/ckpt-apptainer-test}
KDIR=$CACHE_DIR/kernels/$KERNEL
NODE_A_CPU=${NODE_A_CPU:-max,-avx2,model-id=ckpt-apptainer test node without AVX2}
NODE_B_CPU=${NODE_B_CPU:-max}
NODE_TIMEOUT=${NODE_TIMEOUT:-900}

[[ $(id -u) == 0 ]] || die "run as root"
[[ -s $KDIR/vmlinuz && -f $KDIR/modules/order ]] ||
	die "kernel $KERNEL or its modules missing in $KDIR: run scripts/fetch-kernels.sh $KERNEL"
[[ -d $SHARED ]] || die "$SHARED is not a directory"
[[ -f $SCRIPT ]] || die "$SCRIPT not found"
for c in qemu-system-x86_64 busybox; do
	command -v "$c" >/dev/null || die "$c not found: run scripts/install-deps.sh"
done
busybox=$(command -v busybox)
if readelf -l "$busybox" 2>/dev/null | grep -q 'program interpreter'; then
	die "$busybox is not static: install busybox-static"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,modules}
cp "$busybox" "$root/bin/busybox"
cp "$(dirname "${BASH_SOURCE[0]}")/lib/node-init.sh" "$root/init"
chmod 0755 "$root/init"
cp "$KDIR"/modules/*.ko "$KDIR/modules/order" "$root/modules/" 2>/dev/null || cp "$KDIR/modules/order" "$root/modules/"
(cd "$root" && find . | "$root/bin/busybox" cpio -o -H newc 2>/dev/null) >"$work/initrd.cpio"

# boot NAME CPU: one node, in the background; its pid in pids[NAME].
declare -A pids
boot() {
	local name=$1 cpu=$2
	rm -f "$SHARED/$name.exit" "$SHARED/$name.out"
	timeout "$NODE_TIMEOUT" qemu-system-x86_64 -accel tcg -cpu "$cpu" -m 1536 -smp 1 \
		-display none -monitor none -no-reboot -nic none \
		-serial "file:$SHARED/$name.console" \
		-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
		-virtfs "local,path=$SHARED,mount_tag=shared,security_model=passthrough,multidevs=remap" \
		-kernel "$KDIR/vmlinuz" -initrd "$work/initrd.cpio" \
		-append "console=ttyS0 panic=-1 rdinit=/init quiet node=$name shared=$SHARED script=$SCRIPT" \
		>"$SHARED/$name.qemu" 2>&1 &
	pids[$name]=$!
}

boot node-a "$NODE_A_CPU"
boot node-b "$NODE_B_CPU"
status=0
for name in node-a node-b; do
	if ! wait "${pids[$name]}"; then
		echo "two-nodes: $name: qemu failed or ran past ${NODE_TIMEOUT}s; see $SHARED/$name.console" >&2
		status=1
	fi
	if [[ ! -f $SHARED/$name.exit ]]; then
		echo "two-nodes: $name did not finish its script; see $SHARED/$name.console" >&2
		status=1
	fi
done
exit $status
