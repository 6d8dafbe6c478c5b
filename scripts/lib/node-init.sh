#!/bin/busybox sh
# node-init.sh is PID 1 of a node of scripts/two-nodes.sh: it loads the
# virtio 9p modules, mounts the host's root read-only as the node's root
# with node-local /tmp, /dev/shm and /run, mounts the shared directory
# read-write at the path it has on the host (like a cluster's shared file
# system), names the node, makes that root its root and runs the node
# script there. Parameters come
# on the kernel command line: node=NAME shared=DIR script=PATH.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do
	insmod "/modules/$m.ko" || echo "node-init: insmod $m failed"
done
node= shared= script=
for a in $(cat /proc/cmdline); do
	case $a in
	node=*) node=${a#node=} ;;
	shared=*) shared=${a#shared=} ;;
	script=*) script=${a#script=} ;;
	esac
done
fail() {
	echo "node-init: $*"
	poweroff -f
}
R=/host
mkdir -p $R
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=262144 hostroot $R || fail "mount the host's root"
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/shm $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmp $R/tmp
mount -t tmpfs -o mode=0755 run $R/run
mkdir -p "$R$shared"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 shared "$R$shared" || fail "mount the shared directory"
hostname "$node"
# Debian's kernels before 6.x gate unprivileged user namespaces.
[ -e /proc/sys/kernel/unprivileged_userns_clone ] && echo 1 >/proc/sys/kernel/unprivileged_userns_clone
# The host's root becomes the root, not a chroot: the kernel refuses
# unprivileged user namespaces to a chrooted process. This shell goes on
# as PID 1 from a copy of busybox on the node's /run.
mkdir -p $R/run/ckpt-node && cp /bin/busybox $R/run/ckpt-node/busybox
cd $R
mount --move . / || fail "move the host's root to /"
exec chroot . /run/ckpt-node/busybox sh -c '
	/bin/bash "$0" "$1" >"$2/$1.out" 2>&1
	echo "exit $?" >"$2/$1.exit"
	sync
	/run/ckpt-node/busybox poweroff -f' "$script" "$node" "$shared"
