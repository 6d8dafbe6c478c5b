package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/fds"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/fileid"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

const (
	nRlimits  = 16 // RLIM_NLIMITS
	prSetMM   = 35 // PR_SET_MM
	prSetMMap = 14 // PR_SET_MM_MAP
)

// restoredStubExe is the exe link of a process restored in a container
// (see restoreMM).
const restoredStubExe = "/memfd:ckpt-stub (deleted)"

// setExe records exe, process hostPID's executable.
func setExe(hostPID int, p *image.Process, exe string) error {
	id, err := fileid.OfProc(hostPID, exe)
	if err != nil {
		return fmt.Errorf("pid %d: exe: %w", p.PID, err)
	}
	p.Exe = *id
	return nil
}

// exeFromCode finds the executable of a process whose exe link is lost:
// the file mapped where its code starts.
func exeFromCode(hostPID int, p *image.Process) error {
	for _, v := range p.VMAs {
		if v.File != nil && v.Start <= p.MM.StartCode && p.MM.StartCode < v.End {
			return setExe(hostPID, p, v.File.Path)
		}
	}
	return fmt.Errorf("pid %d: its executable is unknown (no file mapped at its code, %#x)", p.PID, p.MM.StartCode)
}

// dumpTask records ids, capabilities, limits, mm fields, cwd and the like.
// brk comes from an injected brk(0): /proc shows only where the heap
// started.
func dumpTask(rem *inject.Process, hostPID int, p *image.Process) error {
	st, err := proc.ReadStatus(strconv.Itoa(hostPID))
	if err != nil {
		return err
	}
	if s := st["Seccomp"]; s != "" && s != "0" {
		return fmt.Errorf("pid %d runs under seccomp (mode %s): not supported yet", p.PID, s)
	}
	uids, err := st.Ints("Uid")
	if err != nil {
		return err
	}
	gids, err := st.Ints("Gid")
	if err != nil {
		return err
	}
	copy(p.Creds.UID[:], uids)
	copy(p.Creds.GID[:], gids)
	for key, dst := range map[string]*uint64{"CapInh": &p.Creds.CapInh, "CapPrm": &p.Creds.CapPrm,
		"CapEff": &p.Creds.CapEff, "CapBnd": &p.Creds.CapBnd, "CapAmb": &p.Creds.CapAmb} {
		if *dst, err = st.Hex(key); err != nil {
			return err
		}
	}
	p.Creds.NoNewPrivs = st["NoNewPrivs"] == "1"
	if um, ok := st["Umask"]; ok {
		n, _ := strconv.ParseUint(um, 8, 32)
		p.Umask = uint32(n)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/personality", hostPID)); err == nil {
		n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 16, 32)
		p.Personality = uint32(n)
	}
	if p.Cwd, err = os.Readlink(fmt.Sprintf("/proc/%d/cwd", hostPID)); err != nil {
		return fmt.Errorf("pid %d: cwd: %w", p.PID, err)
	}
	if p.Root, err = os.Readlink(fmt.Sprintf("/proc/%d/root", hostPID)); err != nil {
		return fmt.Errorf("pid %d: root: %w", p.PID, err)
	}
	if p.Root != "/" {
		return fmt.Errorf("pid %d has root directory %s: chroot'ed processes are not supported yet", p.PID, p.Root)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", hostPID))
	if err != nil {
		return fmt.Errorf("pid %d: exe: %w", p.PID, err)
	}
	if exe == restoredStubExe {
		// A process restored in a container, whose exe link could not
		// be set: its executable is the file mapped at its code, which
		// dumpProcess fills in once the mappings are read.
		p.Exe = image.FileID{}
	} else if strings.HasSuffix(exe, " (deleted)") {
		return fmt.Errorf("pid %d runs deleted executable %s: not supported", p.PID, exe)
	} else if err := setExe(hostPID, p, exe); err != nil {
		return err
	}
	for res := 0; res < nRlimits; res++ {
		var rl unix.Rlimit
		if err := unix.Prlimit(hostPID, res, nil, &rl); err != nil {
			return fmt.Errorf("pid %d: prlimit %d: %w", p.PID, res, err)
		}
		p.Rlimits = append(p.Rlimits, image.Rlimit{Resource: res, Cur: rl.Cur, Max: rl.Max})
	}
	stat, err := proc.ReadStat(hostPID)
	if err != nil {
		return err
	}
	brk, err := rem.Main.Call("brk", unix.SYS_BRK, 0)
	if err != nil {
		return err
	}
	auxv, err := proc.ReadAuxv(hostPID)
	if err != nil {
		return err
	}
	if p.PdeathSignal, err = rem.PrctlGetInt("PR_GET_PDEATHSIG", unix.PR_GET_PDEATHSIG); err != nil {
		return err
	}
	subreaper, err := rem.PrctlGetInt("PR_GET_CHILD_SUBREAPER", unix.PR_GET_CHILD_SUBREAPER)
	if err != nil {
		return err
	}
	p.ChildSubreaper = subreaper != 0
	p.MM = image.MM{
		StartCode: stat.StartCode, EndCode: stat.EndCode,
		StartData: stat.StartData, EndData: stat.EndData,
		StartBrk: stat.StartBrk, Brk: brk, StartStack: stat.StartStack,
		ArgStart: stat.ArgStart, ArgEnd: stat.ArgEnd,
		EnvStart: stat.EnvStart, EnvEnd: stat.EnvEnd,
		Auxv: auxv,
	}
	return nil
}

// prctlMMMap is struct prctl_mm_map.
type prctlMMMap struct {
	StartCode, EndCode, StartData, EndData uint64
	StartBrk, Brk, StartStack              uint64
	ArgStart, ArgEnd, EnvStart, EnvEnd     uint64
	Auxv                                   uint64
	AuxvSize                               uint32
	ExeFD                                  uint32
}

// restoreMM sets the mm_struct fields in one prctl(PR_SET_MM_MAP), which
// needs no CAP_SYS_RESOURCE, and points /proc/pid/exe at the original
// executable (allowed by CAP_SYS_ADMIN in the job's user namespace).
func (r *restorer) restoreMM(p *image.Process) error {
	auxv := make([]byte, 8*len(p.MM.Auxv))
	for i, w := range p.MM.Auxv {
		binary.LittleEndian.PutUint64(auxv[8*i:], w)
	}
	auxvAddr, err := r.ScratchAt(4096, uint64(len(auxv)))
	if err != nil {
		return err
	}
	if err := r.Write(auxvAddr, auxv); err != nil {
		return err
	}
	exeFD, err := r.Openat(p.Exe.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("exe: %w", err)
	}
	defer r.Main.Syscall(unix.SYS_CLOSE, exeFD)
	mm := prctlMMMap{
		StartCode: p.MM.StartCode, EndCode: p.MM.EndCode,
		StartData: p.MM.StartData, EndData: p.MM.EndData,
		StartBrk: p.MM.StartBrk, Brk: p.MM.Brk, StartStack: p.MM.StartStack,
		ArgStart: p.MM.ArgStart, ArgEnd: p.MM.ArgEnd,
		EnvStart: p.MM.EnvStart, EnvEnd: p.MM.EnvEnd,
		Auxv: auxvAddr, AuxvSize: uint32(len(auxv)), ExeFD: uint32(exeFD),
	}
	mmAddr, err := r.ScratchAt(0, inject.SizeOf[prctlMMMap]())
	if err != nil {
		return err
	}
	if err := inject.WriteValue(&r.Process, mmAddr, &mm); err != nil {
		return err
	}
	_, err = r.Main.Call("prctl(PR_SET_MM_MAP)", unix.SYS_PRCTL, prSetMM, prSetMMap, mmAddr, inject.SizeOf[prctlMMMap]())
	if (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EBUSY)) && r.job != nil && r.job.opts.Container != nil {
		// A container's stub has no capability in the container's user
		// namespace: everything but the exe link can be set. Its exe
		// link was set by an exec (execExe), already to the file
		// PR_SET_MM_MAP would point it at; a stub that does have the
		// capability (root in a container of its own) is refused for
		// that reason (EBUSY: the link's file is mapped, as the
		// restored program maps its executable).
		mm.ExeFD = ^uint32(0)
		if err := inject.WriteValue(&r.Process, mmAddr, &mm); err != nil {
			return err
		}
		_, err = r.Main.Call("prctl(PR_SET_MM_MAP)", unix.SYS_PRCTL, prSetMM, prSetMMap, mmAddr, inject.SizeOf[prctlMMMap]())
	}
	return err
}

// restoreTask sets personality, umask, cwd and resource limits.
func (r *restorer) restoreTask(p *image.Process) error {
	if _, err := r.Main.Call("personality", unix.SYS_PERSONALITY, uint64(p.Personality)); err != nil {
		return err
	}
	if _, err := r.Main.Call("umask", unix.SYS_UMASK, uint64(p.Umask)); err != nil {
		return err
	}
	addr, err := r.PutString(0, p.Cwd)
	if err != nil {
		return err
	}
	if _, err := r.Main.Call("chdir "+p.Cwd, unix.SYS_CHDIR, addr); err != nil {
		return err
	}
	if p.PdeathSignal != 0 {
		if _, err := r.Main.Call("prctl(PR_SET_PDEATHSIG)", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uint64(p.PdeathSignal)); err != nil {
			return err
		}
	}
	if p.ChildSubreaper {
		if _, err := r.Main.Call("prctl(PR_SET_CHILD_SUBREAPER)", unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 1); err != nil {
			return err
		}
	}
	for _, rl := range p.Rlimits {
		var cur unix.Rlimit
		if err := unix.Prlimit(r.PID, rl.Resource, nil, &cur); err != nil {
			return fmt.Errorf("prlimit %d: %w", rl.Resource, err)
		}
		want := unix.Rlimit{Cur: rl.Cur, Max: rl.Max}
		if want.Max > cur.Max {
			// Raising a hard limit needs CAP_SYS_RESOURCE in the
			// initial namespace, which an unprivileged restart lacks.
			r.log.Warnf("pid %d: resource limit %d: hard limit %d at checkpoint, %d allowed here; keeping %d", p.PID, rl.Resource, want.Max, cur.Max, cur.Max)
			want.Max = cur.Max
			want.Cur = min(want.Cur, cur.Max)
		}
		if want == cur {
			continue
		}
		if err := unix.Prlimit(r.PID, rl.Resource, &want, nil); err != nil {
			return fmt.Errorf("prlimit %d: %w", rl.Resource, err)
		}
	}
	return nil
}

// capUserHeader and capUserData are the capget/capset ABI (version 3).
type capUserHeader struct {
	Version uint32
	PID     int32
}

type capUserData struct {
	Effective, Permitted, Inheritable uint32
}

const linuxCapabilityVersion3 = 0x20080522

// restoreCreds drops the thread's capabilities to the recorded sets. The
// stub started with the ones the restore needs (clone3 set_tid, exe
// link); they go last. Capabilities are per thread, so every thread is
// done on its own.
func (r *restorer) restoreCreds(th *ptrace.Thread, c *image.Creds) error {
	if c.NoNewPrivs {
		if _, err := th.Call("prctl(PR_SET_NO_NEW_PRIVS)", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return err
		}
	}
	if _, err := th.Call("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return err
	}
	top := kernel.LastCap()
	for c2 := 0; c2 <= top; c2++ {
		if c.CapBnd&(1<<c2) != 0 {
			continue
		}
		// Dropping needs CAP_SETPCAP, which a container's stub lacks
		// (its bounding set is the one the runtime gave, as before).
		if in, err := th.Call("prctl(PR_CAPBSET_READ)", unix.SYS_PRCTL, unix.PR_CAPBSET_READ, uint64(c2)); err == nil && in == 0 {
			continue
		}
		if _, err := th.Call("prctl(PR_CAPBSET_DROP)", unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uint64(c2)); err != nil {
			return err
		}
	}
	hdr := capUserHeader{Version: linuxCapabilityVersion3}
	data := [2]capUserData{
		{Effective: uint32(c.CapEff), Permitted: uint32(c.CapPrm), Inheritable: uint32(c.CapInh)},
		{Effective: uint32(c.CapEff >> 32), Permitted: uint32(c.CapPrm >> 32), Inheritable: uint32(c.CapInh >> 32)},
	}
	hdrAddr, _ := r.ScratchAt(0, 8)
	dataAddr, _ := r.ScratchAt(64, 24)
	if err := inject.WriteValue(&r.Process, hdrAddr, &hdr); err != nil {
		return err
	}
	if err := inject.WriteValue(&r.Process, dataAddr, &data); err != nil {
		return err
	}
	if _, err := th.Call("capset", unix.SYS_CAPSET, hdrAddr, dataAddr); err != nil {
		return err
	}
	for c2 := 0; c2 <= top; c2++ {
		if c.CapAmb&(1<<c2) == 0 {
			continue
		}
		if _, err := th.Call("prctl(PR_CAP_AMBIENT_RAISE)", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uint64(c2), 0, 0); err != nil {
			return err
		}
	}
	return nil
}

// preflight checks, before anything is started, that the restore can work
// here: same user, same files. It also rolls written files back.
//
// root is where the process's files are seen from: "" for the host's view;
// a container's files are checked through its main process's root
// (/proc/PID/root), once the container exists, so a container restore
// calls preflight twice.
func preflight(p *image.Process, opts RestoreOptions, root string) error {
	if uid := os.Getuid(); p.Creds.UID[0] != uid {
		return fmt.Errorf("the checkpoint was taken as uid %d; restart it as that user (running as %d)", p.Creds.UID[0], uid)
	}
	if root == "" {
		if err := checkXState(p, opts.Gen.Manifest.CPU); err != nil {
			return err
		}
	}
	if opts.Container != nil && root == "" {
		return nil
	}
	if err := fileid.Check(root, &p.Exe); err != nil {
		return fmt.Errorf("executable: %w", err)
	}
	// A file the job writes through a shared mapping has other contents
	// and mtime by now: the restore writes the job's pages back, and only
	// its size must be the same. Any other mapped file must be the one
	// the job had.
	writtenShared := map[string]bool{}
	for _, v := range p.VMAs {
		if v.File != nil && v.Kind == image.VMAFileShared && v.Prot&unix.PROT_WRITE != 0 {
			writtenShared[v.File.Path] = true
		}
	}
	seen := map[string]bool{}
	for _, v := range p.VMAs {
		if v.File != nil && !seen[v.File.Path] {
			seen[v.File.Path] = true
			check := fileid.Check
			if writtenShared[v.File.Path] {
				check = fileid.CheckSize
			}
			if err := check(root, v.File); err != nil {
				return fmt.Errorf("mapped file: %w", err)
			}
		}
	}
	return fds.Rollback(p, fds.RollbackOptions{Strict: opts.Strict, NoRollback: opts.NoRollback, Log: opts.Log}, root)
}
