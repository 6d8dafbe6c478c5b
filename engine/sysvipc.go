package engine

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/abi"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// System V IPC is reached through a helper: a restore stub started by the
// supervisor that joins the job's user and IPC namespaces with setns and
// runs every IPC system call by injection. The supervisor cannot do it on
// one of its own threads: setns(CLONE_NEWIPC) wants CAP_SYS_ADMIN in the
// caller's own user namespace as well as in the namespace's owner, which an
// unprivileged supervisor lacks, and joining the job user namespace first
// is refused to a multi-threaded process. The single-threaded helper may
// join both, and then holds every capability inside the job user namespace
// (CAP_IPC_OWNER to read any object, CAP_CHECKPOINT_RESTORE for the
// *_next_id sysctls, CAP_SYS_RESOURCE for queue sizes).
//
// Ids, uids and gids are those seen inside the job user namespace, where
// the helper asks.

// ipcSysctls are the per-namespace IPC limits under /proc/sys/kernel.
var ipcSysctls = []string{"shmmax", "shmall", "shmmni", "shm_rmid_forced", "msgmax", "msgmnb", "msgmni", "sem"}

// dumpSysVIPC records every System V object of the IPC namespace of the
// job whose init has host pid initHostPID: ids, keys, owners, modes,
// semaphore values, queued messages, and each shared memory segment's
// contents in a data file of w. A job that shares the supervisor's IPC
// namespace has none of its own: the result is nil. Precondition: the job
// is stopped, so nothing changes while it is read.
func dumpSysVIPC(initHostPID int, w *image.Writer) (*image.SysVIPC, error) {
	own, err := ownIPCNamespace(initHostPID)
	if err != nil {
		return nil, fmt.Errorf("dump System V IPC: %w", err)
	}
	if !own {
		logrus.Infof("the job shares the host's IPC namespace: its System V IPC objects are not checkpointed")
		return nil, nil
	}
	t := ptrace.NewTracer()
	defer t.Close()
	h, err := startIPCHelper(t, initHostPID)
	if err != nil {
		return nil, fmt.Errorf("dump System V IPC: %w", err)
	}
	defer h.stop()
	ipc, err := h.dump(w)
	if err != nil {
		return nil, fmt.Errorf("dump System V IPC: %w", err)
	}
	logrus.Debugf("System V IPC: %d segments, %d semaphore sets, %d message queues", len(ipc.Shm), len(ipc.Sem), len(ipc.Msg))
	if ipc.Count() == 0 {
		// Limits alone matter to no restart.
		return nil, nil
	}
	return ipc, nil
}

// restoreSysVIPC re-creates the objects of ipc, with their ids, keys,
// owners, modes and contents, in the empty IPC namespace of the new job
// whose init has host pid initHostPID. dir is the generation directory with
// the segments' data files. It must run before any process of the job
// attaches a segment; finishSysVIPC completes it once they all have.
func restoreSysVIPC(initHostPID int, ipc *image.SysVIPC, gen *image.Generation) error {
	if ipc == nil {
		return nil
	}
	own, err := ownIPCNamespace(initHostPID)
	if err != nil {
		return fmt.Errorf("restore System V IPC: %w", err)
	}
	if !own {
		return fmt.Errorf("restore System V IPC: the image holds %d System V IPC objects, but the restart's sandbox has no IPC namespace of its own (disabled at this site?); they can only be restored with their ids in a new one", ipc.Count())
	}
	t := ptrace.NewTracer()
	defer t.Close()
	h, err := startIPCHelper(t, initHostPID)
	if err != nil {
		return fmt.Errorf("restore System V IPC: %w", err)
	}
	defer h.stop()
	if err := h.restore(ipc, gen); err != nil {
		return fmt.Errorf("restore System V IPC: %w", err)
	}
	return nil
}

// finishSysVIPC marks the segments that were marked for destruction at
// checkpoint time (SHM_DEST) again. Until then a restored process can
// attach them by id; a segment no process has attached is destroyed now.
func finishSysVIPC(initHostPID int, ipc *image.SysVIPC) error {
	if ipc == nil {
		return nil
	}
	var dest []image.SysVShm
	for _, s := range ipc.Shm {
		if s.Destroyed {
			dest = append(dest, s)
		}
	}
	if len(dest) == 0 {
		return nil
	}
	t := ptrace.NewTracer()
	defer t.Close()
	h, err := startIPCHelper(t, initHostPID)
	if err != nil {
		return fmt.Errorf("finish System V IPC: %w", err)
	}
	defer h.stop()
	for _, s := range dest {
		if _, err := h.Main.Call("shmctl IPC_RMID", unix.SYS_SHMCTL, uint64(s.ID), unix.IPC_RMID, 0); err != nil {
			return fmt.Errorf("finish System V IPC: mark shm %d destroyed: %w", s.ID, err)
		}
	}
	return nil
}

// ipcHolder picks the process whose namespaces the IPC helper joins for a
// container's application (host pid app): the application when it has an
// IPC namespace of its own (created in the container's user namespace),
// else the sandbox init, whose user namespace owns the sandbox's IPC
// namespace (the container's user namespace holds no capability over it).
func ipcHolder(initPID, app int) int {
	a, aerr := os.Readlink("/proc/" + strconv.Itoa(app) + "/ns/ipc")
	i, ierr := os.Readlink("/proc/" + strconv.Itoa(initPID) + "/ns/ipc")
	if aerr == nil && ierr == nil && a != i {
		return app
	}
	return initPID
}

// ownIPCNamespace reports whether the process has an IPC namespace other
// than the supervisor's.
func ownIPCNamespace(pid int) (bool, error) {
	theirs, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/ipc")
	if err != nil {
		return false, fmt.Errorf("IPC namespace of pid %d: %w", pid, err)
	}
	ours, err := os.Readlink("/proc/self/ns/ipc")
	if err != nil {
		return false, fmt.Errorf("own IPC namespace: %w", err)
	}
	return theirs != ours, nil
}

// dump reads the whole namespace.
func (h *ipcHelper) dump(w *image.Writer) (*image.SysVIPC, error) {
	ipc := &image.SysVIPC{}
	for _, name := range ipcSysctls {
		v, err := h.readSysctl(name)
		if err != nil {
			return nil, err
		}
		if ipc.Limits == nil {
			ipc.Limits = map[string]string{}
		}
		ipc.Limits[name] = v
	}
	_, si, err := h.info(shmKind)
	if err != nil {
		return nil, err
	}
	// With nothing swapped out, mincore tells which pages of a segment hold
	// data; the others are holes that need not be faulted in.
	noSwap := abi.Order.Uint64(si[offShmSwp:]) == 0
	err = h.list(shmKind, func(id int, ds []byte) error {
		mode := abi.Order.Uint32(ds[20:])
		s := image.SysVShm{
			SysVPerm:  parsePerm(ds, id),
			Size:      abi.Order.Uint64(ds[abi.OffShmSegsz:]),
			Destroyed: mode&shmDest != 0,
			Locked:    mode&shmLocked != 0,
			Data:      image.SysVShmName(id),
		}
		if err := h.dumpShm(&s, w, noSwap); err != nil {
			return fmt.Errorf("shm %d (key %#x): %w", id, uint32(s.Key), err)
		}
		ipc.Shm = append(ipc.Shm, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = h.list(semKind, func(id int, ds []byte) error {
		s := image.SysVSem{SysVPerm: parsePerm(ds, id)}
		n := abi.Order.Uint64(ds[offSemNsems:])
		if err := h.ensureBuf(2 * n); err != nil {
			return err
		}
		if _, err := h.ctl(semKind, id, semGetAll, h.buf); err != nil {
			return fmt.Errorf("sem %d (key %#x): %w", id, uint32(s.Key), err)
		}
		raw := make([]byte, 2*n)
		if err := h.Read(h.buf, raw); err != nil {
			return err
		}
		s.Values = make([]uint16, n)
		for i := range s.Values {
			s.Values[i] = abi.Order.Uint16(raw[2*i:])
		}
		ipc.Sem = append(ipc.Sem, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = h.list(msgKind, func(id int, ds []byte) error {
		q := image.SysVMsq{SysVPerm: parsePerm(ds, id), QBytes: abi.Order.Uint64(ds[offMsgQbytes:])}
		if err := h.dumpMessages(&q, abi.Order.Uint64(ds[offMsgQnum:]), abi.Order.Uint64(ds[offMsgCbytes:])); err != nil {
			return fmt.Errorf("msg %d (key %#x): %w", id, uint32(q.Key), err)
		}
		ipc.Msg = append(ipc.Msg, q)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ipc, nil
}

// dumpMessages copies the qnum messages of a queue holding cbytes bytes
// without taking them off it (MSG_COPY).
func (h *ipcHelper) dumpMessages(q *image.SysVMsq, qnum, cbytes uint64) error {
	if qnum == 0 {
		return nil
	}
	// No message is longer than all of them together.
	if err := h.ensureBuf(8 + cbytes); err != nil {
		return err
	}
	for i := uint64(0); i < qnum; i++ {
		n, err := h.Main.Call("msgrcv(MSG_COPY)", unix.SYS_MSGRCV, uint64(q.ID), h.buf, cbytes, i, ipcNowait|msgCopy)
		if isErrno(err, unix.ENOSYS) {
			return fmt.Errorf("message %d: this kernel cannot copy messages (MSG_COPY needs CONFIG_CHECKPOINT_RESTORE)", i)
		}
		if err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		b := make([]byte, 8+n)
		if err := h.Read(h.buf, b); err != nil {
			return err
		}
		q.Messages = append(q.Messages, image.SysVMsg{Type: int64(abi.Order.Uint64(b)), Data: b[8:]})
	}
	return nil
}

// shmChunk is how much of a segment one transfer moves.
const shmChunk = 4 << 20

// dumpShm writes the contents of segment s to its data file. Pages that
// are not resident and not swapped out are holes: they are written as
// zeros without being faulted in. The helper's attachment changes the
// segment's attach time and last pid, which no restore can set anyway.
func (h *ipcHelper) dumpShm(s *image.SysVShm, w *image.Writer, noSwap bool) error {
	f, err := w.Create(s.Data)
	if err != nil {
		return err
	}
	defer f.Close()
	if s.Size == 0 {
		return f.Close()
	}
	addr, err := h.Main.Call("shmat", unix.SYS_SHMAT, uint64(s.ID), 0, abi.ShmRdonly)
	if err != nil {
		return err
	}
	defer h.Main.Syscall(unix.SYS_SHMDT, addr)
	chunk := make([]byte, min(s.Size, shmChunk))
	npages := (uint64(len(chunk)) + pageSize - 1) / pageSize
	if noSwap {
		if err := h.ensureBuf(npages); err != nil {
			return err
		}
	}
	vec := make([]byte, npages)
	for off := uint64(0); off < s.Size; off += uint64(len(chunk)) {
		b := chunk[:min(uint64(len(chunk)), s.Size-off)]
		n := (uint64(len(b)) + pageSize - 1) / pageSize
		if !noSwap {
			if err := h.Read(addr+off, b); err != nil {
				return err
			}
		} else {
			if _, err := h.Main.Call("mincore", unix.SYS_MINCORE, addr+off, uint64(len(b)), h.buf); err != nil {
				return err
			}
			if err := h.Read(h.buf, vec[:n]); err != nil {
				return err
			}
			clear(b)
			for p := uint64(0); p < n; {
				if vec[p]&1 == 0 {
					p++
					continue
				}
				q := p
				for q < n && vec[q]&1 != 0 {
					q++
				}
				end := min(q*pageSize, uint64(len(b)))
				if err := h.Read(addr+off+p*pageSize, b[p*pageSize:end]); err != nil {
					return err
				}
				p = q
			}
		}
		if _, err := f.Write(b); err != nil {
			return err
		}
	}
	return f.Close()
}

// restore re-creates ipc in the helper's (empty) namespace.
func (h *ipcHelper) restore(ipc *image.SysVIPC, gen *image.Generation) error {
	if err := h.checkEmpty(); err != nil {
		return err
	}
	// Limits first: they bound the sizes of what is created next.
	for _, name := range ipcSysctls {
		want, ok := ipc.Limits[name]
		if !ok {
			continue
		}
		have, err := h.readSysctl(name)
		if err != nil {
			return err
		}
		if sameSysctl(have, want) {
			continue
		}
		if err := h.writeSysctl(name, want); err != nil {
			return fmt.Errorf("set kernel.%s to %q as at checkpoint time (now %q): %w", name, want, have, err)
		}
	}
	for i := range ipc.Shm {
		s := &ipc.Shm[i]
		if err := h.restoreShm(s, gen); err != nil {
			return fmt.Errorf("shm %d (key %#x): %w", s.ID, uint32(s.Key), err)
		}
	}
	for i := range ipc.Sem {
		s := &ipc.Sem[i]
		if err := h.restoreSem(s); err != nil {
			return fmt.Errorf("sem %d (key %#x): %w", s.ID, uint32(s.Key), err)
		}
	}
	for i := range ipc.Msg {
		q := &ipc.Msg[i]
		if err := h.restoreMsq(q); err != nil {
			return fmt.Errorf("msg %d (key %#x): %w", q.ID, uint32(q.Key), err)
		}
	}
	return nil
}

// checkEmpty refuses a namespace that already holds objects: their ids
// could be the ones the image needs.
func (h *ipcHelper) checkEmpty() error {
	_, si, err := h.info(shmKind)
	if err != nil {
		return err
	}
	_, semi, err := h.info(semKind)
	if err != nil {
		return err
	}
	_, msgi, err := h.info(msgKind)
	if err != nil {
		return err
	}
	shm, sem, msg := int32(abi.Order.Uint32(si)), int32(abi.Order.Uint32(semi[offSemUsz:])), int32(abi.Order.Uint32(msgi[offMsgPool:]))
	if shm != 0 || sem != 0 || msg != 0 {
		return fmt.Errorf("the job's IPC namespace is not empty (%d segments, %d semaphore sets, %d message queues)", shm, sem, msg)
	}
	return nil
}

// create makes an object of kind k with the recorded id through
// <kind>_next_id, and checks that the kernel gave that id.
func (h *ipcHelper) create(k ipcKind, p *image.SysVPerm, call func() (uint64, error)) error {
	if err := h.setNextID(k.name, p.ID); err != nil {
		return fmt.Errorf("ask for id %d: %w", p.ID, err)
	}
	id, err := call()
	if err != nil {
		return err
	}
	if int(id) != p.ID {
		return fmt.Errorf("the kernel gave id %d instead", id)
	}
	return nil
}

// setPerm applies the recorded owner and mode with IPC_SET. cuid and cgid
// cannot be set: they are the helper's ids, which must be the recorded ones.
func (h *ipcHelper) setPerm(k ipcKind, p *image.SysVPerm, ds []byte) error {
	buf := h.Scratch + scratchStruct
	if _, err := h.ctl(k, p.ID, unix.IPC_STAT, buf); err != nil {
		return err
	}
	cur := make([]byte, k.dsSize)
	if err := h.Read(buf, cur); err != nil {
		return err
	}
	if cuid, cgid := int(abi.Order.Uint32(cur[12:])), int(abi.Order.Uint32(cur[16:])); cuid != p.CUID || cgid != p.CGID {
		return fmt.Errorf("created by uid %d gid %d; it can only be re-created as uid %d gid %d", p.CUID, p.CGID, cuid, cgid)
	}
	if ds == nil {
		ds = cur
	}
	abi.Order.PutUint32(ds[4:], uint32(p.UID))
	abi.Order.PutUint32(ds[8:], uint32(p.GID))
	abi.Order.PutUint32(ds[20:], p.Mode)
	if err := h.Write(buf, ds); err != nil {
		return err
	}
	_, err := h.ctl(k, p.ID, unix.IPC_SET, buf)
	return err
}

// restoreShm re-creates one segment and fills it from its data file.
// All-zero pages are left as holes, as they most likely were.
func (h *ipcHelper) restoreShm(s *image.SysVShm, gen *image.Generation) error {
	err := h.create(shmKind, &s.SysVPerm, func() (uint64, error) {
		return h.Main.Call("shmget", unix.SYS_SHMGET, uint64(uint32(s.Key)), s.Size, uint64(unix.IPC_CREAT|unix.IPC_EXCL|0o600))
	})
	if err != nil {
		return err
	}
	if err := h.fillShm(s, gen); err != nil {
		return err
	}
	if err := h.setPerm(shmKind, &s.SysVPerm, nil); err != nil {
		return err
	}
	if s.Locked {
		if _, err := h.ctl(shmKind, s.ID, shmLock, 0); err != nil {
			return err
		}
	}
	return nil
}

// fillShm copies the data file into the segment.
func (h *ipcHelper) fillShm(s *image.SysVShm, gen *image.Generation) error {
	f, err := gen.Open(s.Data)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return err
	} else if uint64(fi.Size()) != s.Size {
		return fmt.Errorf("%s holds %d bytes, the segment %d", s.Data, fi.Size(), s.Size)
	}
	if s.Size == 0 {
		return nil
	}
	addr, err := h.Main.Call("shmat", unix.SYS_SHMAT, uint64(s.ID), 0, 0)
	if err != nil {
		return err
	}
	defer h.Main.Syscall(unix.SYS_SHMDT, addr)
	chunk := make([]byte, min(s.Size, shmChunk))
	for off := uint64(0); off < s.Size; off += uint64(len(chunk)) {
		b := chunk[:min(uint64(len(chunk)), s.Size-off)]
		if _, err := f.ReadAt(b, int64(off)); err != nil {
			return fmt.Errorf("read %s: %w", s.Data, err)
		}
		for p := uint64(0); p < uint64(len(b)); p += pageSize {
			page := b[p:min(p+pageSize, uint64(len(b)))]
			if isZero(page) {
				continue
			}
			if err := h.Write(addr+off+p, page); err != nil {
				return err
			}
		}
	}
	return nil
}

// isZero reports whether b holds only zero bytes.
func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// restoreSem re-creates one semaphore set with its values.
func (h *ipcHelper) restoreSem(s *image.SysVSem) error {
	if len(s.Values) == 0 {
		return errors.New("a semaphore set without semaphores")
	}
	err := h.create(semKind, &s.SysVPerm, func() (uint64, error) {
		return h.Main.Call("semget", unix.SYS_SEMGET, uint64(uint32(s.Key)), uint64(len(s.Values)), uint64(unix.IPC_CREAT|unix.IPC_EXCL|0o600))
	})
	if err != nil {
		return err
	}
	raw := make([]byte, 2*len(s.Values))
	for i, v := range s.Values {
		abi.Order.PutUint16(raw[2*i:], v)
	}
	if err := h.ensureBuf(uint64(len(raw))); err != nil {
		return err
	}
	if err := h.Write(h.buf, raw); err != nil {
		return err
	}
	if _, err := h.ctl(semKind, s.ID, semSetAll, h.buf); err != nil {
		return err
	}
	return h.setPerm(semKind, &s.SysVPerm, nil)
}

// restoreMsq re-creates one message queue and sends its messages in order.
func (h *ipcHelper) restoreMsq(q *image.SysVMsq) error {
	err := h.create(msgKind, &q.SysVPerm, func() (uint64, error) {
		return h.Main.Call("msgget", unix.SYS_MSGGET, uint64(uint32(q.Key)), uint64(unix.IPC_CREAT|unix.IPC_EXCL|0o600))
	})
	if err != nil {
		return err
	}
	// The byte limit goes in with the owner, before the messages that may
	// need more room than a new queue has.
	buf := h.Scratch + scratchStruct
	if _, err := h.ctl(msgKind, q.ID, unix.IPC_STAT, buf); err != nil {
		return err
	}
	ds := make([]byte, msqidDsSize)
	if err := h.Read(buf, ds); err != nil {
		return err
	}
	abi.Order.PutUint64(ds[offMsgQbytes:], q.QBytes)
	if err := h.setPerm(msgKind, &q.SysVPerm, ds); err != nil {
		return err
	}
	for i, m := range q.Messages {
		b := make([]byte, 8+len(m.Data))
		abi.Order.PutUint64(b, uint64(m.Type))
		copy(b[8:], m.Data)
		if err := h.ensureBuf(uint64(len(b))); err != nil {
			return err
		}
		if err := h.Write(h.buf, b); err != nil {
			return err
		}
		if _, err := h.Main.Call("msgsnd", unix.SYS_MSGSND, uint64(q.ID), h.buf, uint64(len(m.Data)), ipcNowait); err != nil {
			return fmt.Errorf("message %d of %d (type %d, %d bytes): %w", i+1, len(q.Messages), m.Type, len(m.Data), err)
		}
	}
	return nil
}
