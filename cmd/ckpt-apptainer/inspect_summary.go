package main

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/cmd/ckpt-apptainer/supervisor"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// ssDisable is SS_DISABLE, the sigaltstack flag of a disabled stack.
const ssDisable = 2

// summarize builds the report of generation g of store st; verr is the
// result of verifying it (nil when it verified or was not checked). Files
// that cannot be read are named in the report and never fail it:
// inspecting a damaged generation is how a user finds out what it held.
func summarize(st *image.Store, g *image.Generation, verr error) *inspectReport {
	m := g.Manifest
	r := &inspectReport{
		Generation:  g.Gen,
		Dir:         g.Dir,
		Valid:       verr == nil,
		Manifest:    m,
		Processes:   []inspectProcess{},
		MemoryTotal: memoryUsage{ByKind: map[image.VMAKind]memoryFigures{}},
		FDsByKind:   map[image.FDKind]int{},
		Hooks:       []image.HookRun{},
		References:  []string{},
	}
	saved := map[string]bool{}
	for _, lf := range m.LocalFiles {
		saved[lf.File.Path] = true
	}
	refs := map[string]bool{}
	if verr != nil {
		r.Error = verr.Error()
	}
	for _, ref := range m.Processes {
		ip := inspectProcess{
			PID: ref.PID, PPID: ref.PPID, Comm: ref.Comm, Core: ref.Core,
			Threads:   []inspectThread{},
			Memory:    memoryUsage{ByKind: map[image.VMAKind]memoryFigures{}},
			FDs:       []inspectFD{},
			FDsByKind: map[image.FDKind]int{},
		}
		var p image.Process
		bad, err := ref.Core, g.ReadJSON(ref.Core, &p)
		if err == nil && ref.Runs != "" {
			bad = ref.Runs
			p.PageRuns, err = g.ReadPageRuns(ref.Runs)
		}
		if err != nil {
			ip.Error = err.Error()
			r.Unreadable = append(r.Unreadable, unreadableFile{File: bad, Error: err.Error()})
			r.Processes = append(r.Processes, ip)
			continue
		}
		summarizeProcess(&ip, &p)
		for _, f := range fileRefs(&p) {
			if !saved[f] && !refs[f] {
				refs[f] = true
				r.References = append(r.References, f)
			}
		}
		for k, f := range ip.Memory.ByKind {
			r.MemoryTotal.add(k, f)
		}
		for k, n := range ip.FDsByKind {
			r.FDsByKind[k] += n
		}
		r.Processes = append(r.Processes, ip)
	}
	sort.Strings(r.References)
	r.Hooks = append(r.Hooks, m.Hooks...)
	logged, err := st.HookLog(g.Gen)
	if err != nil {
		r.Unreadable = append(r.Unreadable, unreadableFile{File: image.HookLogName, Error: err.Error()})
	}
	r.Hooks = append(r.Hooks, logged...)
	return r
}

// fileRefs lists the files process p reopens by path: its executable,
// mapped files and descriptors of regular files.
func fileRefs(p *image.Process) []string {
	var out []string
	if p.Exe.Path != "" {
		out = append(out, p.Exe.Path)
	}
	for _, v := range p.VMAs {
		if v.File != nil {
			out = append(out, v.File.Path)
		}
	}
	for _, f := range p.Files {
		if f.Kind == image.FDFile && f.File != nil {
			out = append(out, f.File.Path)
		}
	}
	return out
}

// summarizeProcess fills ip from the core file p.
func summarizeProcess(ip *inspectProcess, p *image.Process) {
	ip.PGID, ip.SID, ip.Exe = p.PGID, p.SID, p.Exe.Path
	ip.State = processState(p.State)
	if p.State == image.ProcZombie {
		ip.ExitStatus = p.ExitStatus
	}
	for _, t := range p.Threads {
		it := inspectThread{
			TID: t.TID, Comm: t.Comm, SigMask: t.SigMask, Blocked: signalNames(t.SigMask),
			PendingSignals: len(t.Pending), Rseq: t.Rseq != nil,
		}
		if t.AltStack.Flags&ssDisable == 0 && t.AltStack.Size > 0 {
			it.AltStackSize = t.AltStack.Size
		}
		ip.Threads = append(ip.Threads, it)
	}
	ip.Memory = summarizeMemory(p)
	for _, f := range p.Files {
		fd := summarizeFD(f)
		ip.FDs = append(ip.FDs, fd)
		ip.FDsByKind[fd.Kind]++
	}
}

// processState names a process's run state.
func processState(s image.ProcState) string {
	if s == image.ProcRunning {
		return "running"
	}
	return string(s)
}

// summarizeMemory adds up p's mappings by kind, with the bytes of their
// pages that the image stores (page runs are split between the mappings
// they overlap).
func summarizeMemory(p *image.Process) memoryUsage {
	u := memoryUsage{ByKind: map[image.VMAKind]memoryFigures{}}
	vmas := slices.Clone(p.VMAs)
	slices.SortFunc(vmas, func(a, b image.VMA) int { return cmp.Compare(a.Start, b.Start) })
	stored := make([]int64, len(vmas))
	for _, run := range p.PageRuns {
		start, end := run.Addr, run.Addr+run.Pages*image.PageSize
		var covered uint64
		for i := sort.Search(len(vmas), func(i int) bool { return vmas[i].End > start }); i < len(vmas) && vmas[i].Start < end; i++ {
			lo, hi := max(start, vmas[i].Start), min(end, vmas[i].End)
			stored[i] += int64(hi - lo)
			covered += hi - lo
		}
		if rest := end - start - covered; rest > 0 {
			u.add(vmaUnmapped, memoryFigures{PageBytes: int64(rest)})
		}
	}
	for i, v := range vmas {
		kind := v.Kind
		if kind == "" {
			kind = "unknown"
		}
		u.add(kind, memoryFigures{Mappings: 1, Bytes: int64(v.End - v.Start), PageBytes: stored[i]})
	}
	return u
}

// summarizeFD describes one file descriptor.
func summarizeFD(f image.FD) inspectFD {
	out := inspectFD{FD: f.Num, Kind: f.KindName(), Path: f.Path, Pos: f.Pos, Flags: f.Flags, Detail: fdDetail(f)}
	if out.Path == "" && f.File != nil {
		out.Path = f.File.Path
	}
	if out.Path == "" && f.Contents != nil {
		out.Path = f.Contents.Name
	}
	return out
}

// stdioNames names the supervisor's standard descriptors.
var stdioNames = [...]string{"stdin", "stdout", "stderr"}

// fdDetail says in a few words what a descriptor that is not a plain
// file holds; "" for plain files and devices.
func fdDetail(f image.FD) string {
	switch {
	case f.Kind == image.FDStdio && f.Stdio >= 0 && f.Stdio < len(stdioNames):
		return "the supervisor's " + stdioNames[f.Stdio]
	case f.Kind == image.FDEventfd:
		if f.EventfdSemaphore {
			return fmt.Sprintf("count %d, semaphore", f.EventfdCount)
		}
		return fmt.Sprintf("count %d", f.EventfdCount)
	case f.Kind == image.FDEpoll:
		if len(f.Epoll) == 0 {
			return "no fds watched"
		}
		fds := make([]string, len(f.Epoll))
		for i, e := range f.Epoll {
			fds[i] = strconv.Itoa(e.FD)
		}
		return "watches fd " + strings.Join(fds, ", ")
	case f.Pipe != nil:
		return pipeDetail(f.Pipe)
	case f.Unix != nil:
		return unixDetail(f.Unix)
	case f.Anon != nil && f.Anon.Timerfd != nil:
		t := f.Anon.Timerfd
		if t.ValueSec == 0 && t.ValueNsec == 0 {
			return fmt.Sprintf("clock %d, disarmed, %d unread expirations", t.Clock, t.Ticks)
		}
		return fmt.Sprintf("clock %d, armed, %d unread expirations", t.Clock, t.Ticks)
	case f.Anon != nil && f.Anon.Signalfd != nil:
		return "signals " + orNone(strings.Join(signalNames(f.Anon.Signalfd.Mask), ", "))
	case f.Anon != nil:
		return fmt.Sprintf("%d watches", len(f.Anon.Inotify))
	case f.Contents != nil:
		return supervisor.HumanBytes(f.Contents.Size) + " saved in the image"
	}
	return ""
}

// pipeDetail describes one pipe or FIFO end.
func pipeDetail(p *image.Pipe) string {
	end := "read end"
	switch {
	case p.ReadEnd && p.WriteEnd:
		end = "read-write"
	case p.WriteEnd:
		end = "write end"
	}
	s := fmt.Sprintf("%s of pipe %d", end, p.Inode)
	if len(p.Data) > 0 {
		s += fmt.Sprintf(", %d bytes buffered", len(p.Data))
	}
	return s
}

// unixDetail describes one AF_UNIX socket.
func unixDetail(u *image.UnixSocket) string {
	var typ string
	switch u.Type {
	case unix.SOCK_STREAM:
		typ = "stream"
	case unix.SOCK_DGRAM:
		typ = "dgram"
	case unix.SOCK_SEQPACKET:
		typ = "seqpacket"
	default:
		typ = "type " + strconv.Itoa(u.Type)
	}
	s := typ + " " + u.State
	if u.Name != "" {
		s += ", bound to " + u.Name
	}
	if u.PeerName != "" {
		s += ", peer " + u.PeerName
	}
	if len(u.Queue) > 0 {
		s += fmt.Sprintf(", %d queued", len(u.Queue))
	}
	return s
}

// signalNames names the signals of a mask with bit n-1 for signal n;
// signals without a name (real-time ones) are given by number.
func signalNames(mask uint64) []string {
	var names []string
	for n := 1; n <= 64; n++ {
		if mask&(1<<(n-1)) == 0 {
			continue
		}
		name := unix.SignalName(syscall.Signal(n))
		if name == "" {
			name = strconv.Itoa(n)
		}
		names = append(names, name)
	}
	return names
}
