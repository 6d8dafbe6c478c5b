package main

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/cmd/ckpt-apptainer/supervisor"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// filesShown is how many open files of one process inspect lists before
// it only counts the rest.
const filesShown = 10

// printProcesses writes the process table. A process whose core file
// could not be read shows "?" for what only the core file says.
func printProcesses(p *printer, r *inspectReport) {
	p.line("processes (%d)", len(r.Processes))
	rows := [][]string{{"PID", "PPID", "PGID", "SID", "STATE", "THREADS", "COMM", "EXE"}}
	for _, pr := range r.Processes {
		if pr.Error != "" {
			rows = append(rows, []string{strconv.Itoa(pr.PID), strconv.Itoa(pr.PPID), "?", "?", "?", "?", pr.Comm, "(" + pr.Core + " unreadable)"})
			continue
		}
		state := pr.State
		if pr.State == string(image.ProcZombie) {
			state += fmt.Sprintf(" (status %#x)", pr.ExitStatus)
		}
		rows = append(rows, []string{strconv.Itoa(pr.PID), strconv.Itoa(pr.PPID), strconv.Itoa(pr.PGID), strconv.Itoa(pr.SID),
			state, strconv.Itoa(len(pr.Threads)), pr.Comm, pr.Exe})
	}
	p.table("  ", rows)
}

// notCounted notes the processes left out of the memory and fd figures.
func notCounted(p *printer, r *inspectReport) {
	for _, pr := range r.Processes {
		if pr.Error != "" {
			p.line("  pid %d not counted: %s is unreadable", pr.PID, pr.Core)
		}
	}
}

// printMemory writes the mappings of every process and of the job by kind:
// how many, the address space they cover, and the bytes of their pages the
// image stores.
func printMemory(p *printer, r *inspectReport) {
	p.line("memory")
	rows := [][]string{{"PID", "KIND", "MAPPINGS", "MAPPED", "STORED"}}
	for _, pr := range r.Processes {
		if pr.Error == "" {
			rows = append(rows, memoryRows(strconv.Itoa(pr.PID), pr.Memory)...)
		}
	}
	rows = append(rows, memoryRows("job", r.MemoryTotal)...)
	p.table("  ", rows)
	notCounted(p, r)
}

// vmaKindOrder is the order kinds of mapping are listed in; kinds not
// named here follow, by name.
var vmaKindOrder = []image.VMAKind{
	image.VMAAnon, image.VMAAnonShared, image.VMAFilePrivate, image.VMAFileShared, image.VMAFileGone,
	image.VMASysVShm, image.VMAVDSO, image.VMAVVar, image.VMAVVarVClock, image.VMAVsyscall,
}

// memoryRows are the table rows of u, one per kind and a total, labelled
// who.
func memoryRows(who string, u memoryUsage) [][]string {
	kinds := slices.SortedFunc(maps.Keys(u.ByKind), func(a, b image.VMAKind) int {
		ia, ib := slices.Index(vmaKindOrder, a), slices.Index(vmaKindOrder, b)
		if ia < 0 {
			ia = len(vmaKindOrder)
		}
		if ib < 0 {
			ib = len(vmaKindOrder)
		}
		return cmp.Or(cmp.Compare(ia, ib), cmp.Compare(a, b))
	})
	row := func(kind string, f memoryFigures) []string {
		return []string{who, kind, strconv.Itoa(f.Mappings), supervisor.HumanBytes(f.Bytes), supervisor.HumanBytes(f.PageBytes)}
	}
	var rows [][]string
	for _, k := range kinds {
		rows = append(rows, row(string(k), u.ByKind[k]))
	}
	return append(rows, row("total", u.memoryFigures))
}

// printFDs writes the file descriptors of every process and of the job by
// kind, then the open regular files of each process with their offsets.
func printFDs(p *printer, r *inspectReport) {
	p.line("fds")
	rows := [][]string{{"PID", "COUNT", "BY KIND"}}
	for _, pr := range r.Processes {
		if pr.Error == "" {
			rows = append(rows, []string{strconv.Itoa(pr.PID), strconv.Itoa(len(pr.FDs)), kindCounts(pr.FDsByKind)})
		}
	}
	total := 0
	for _, n := range r.FDsByKind {
		total += n
	}
	rows = append(rows, []string{"job", strconv.Itoa(total), kindCounts(r.FDsByKind)})
	p.table("  ", rows)
	notCounted(p, r)
	for _, pr := range r.Processes {
		var files [][]string
		for _, fd := range pr.FDs {
			if fd.Kind == image.FDFile || fd.Kind == image.FDDeleted {
				files = append(files, []string{strconv.Itoa(fd.FD), accessMode(fd.Flags), fd.Path, "offset " + strconv.FormatInt(fd.Pos, 10)})
			}
		}
		if len(files) == 0 {
			continue
		}
		p.line("  files of pid %d", pr.PID)
		p.table("    ", files[:min(len(files), filesShown)])
		if len(files) > filesShown {
			p.line("    ... %d more", len(files)-filesShown)
		}
	}
}

// kindCounts lists counts by kind, by name: "file 2, pipe 1"; "none".
func kindCounts(m map[image.FDKind]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return orNone(strings.Join(parts, ", "))
}

// accessMode shows the access mode of open flags: r, w or rw, with
// ",append" for O_APPEND.
func accessMode(flags int) string {
	var s string
	switch flags & unix.O_ACCMODE {
	case unix.O_RDONLY:
		s = "r"
	case unix.O_WRONLY:
		s = "w"
	default:
		s = "rw"
	}
	if flags&unix.O_APPEND != 0 {
		s += ",append"
	}
	return s
}

// printIPC writes the job's System V IPC objects, if it had any.
func printIPC(p *printer, ipc *image.SysVIPC) {
	if ipc.Count() == 0 {
		return
	}
	p.line("System V IPC")
	var rows [][]string
	perm := func(o image.SysVPerm) string {
		return fmt.Sprintf("key %#08x id %d, owner %d/%d, mode %#o", uint32(o.Key), o.ID, o.UID, o.GID, o.Mode)
	}
	for _, s := range ipc.Shm {
		what := supervisor.HumanBytes(int64(s.Size))
		if s.Destroyed {
			what += ", removed (IPC_RMID), still attached"
		}
		if s.Locked {
			what += ", locked"
		}
		rows = append(rows, []string{"shm", perm(s.SysVPerm), what})
	}
	for _, s := range ipc.Sem {
		rows = append(rows, []string{"sem", perm(s.SysVPerm), fmt.Sprintf("%d semaphores", len(s.Values))})
	}
	for _, q := range ipc.Msg {
		bytes := 0
		for _, msg := range q.Messages {
			bytes += len(msg.Data)
		}
		rows = append(rows, []string{"msg", perm(q.SysVPerm), fmt.Sprintf("%d messages (%d bytes), qbytes %d", len(q.Messages), bytes, q.QBytes)})
	}
	p.table("  ", rows)
	if len(ipc.Limits) > 0 {
		var limits []string
		for _, k := range slices.Sorted(maps.Keys(ipc.Limits)) {
			limits = append(limits, k+"="+ipc.Limits[k])
		}
		p.line("  limits     %s", strings.Join(limits, ", "))
	}
}

// printFiles writes which files the image holds (node-local ones, which a
// restart on another node creates again) and which it refers to.
func printFiles(p *printer, saved []image.LocalFile, refs []string) {
	var total int64
	for _, lf := range saved {
		total += lf.File.Size
	}
	p.line("files      %d saved (node-local, %s), %d references", len(saved), supervisor.HumanBytes(total), len(refs))
	if len(saved) > 0 {
		rows := [][]string{{"SAVED", "SIZE", "WHERE", "DATA"}}
		for _, lf := range saved {
			rows = append(rows, []string{lf.File.Path, supervisor.HumanBytes(lf.File.Size), lf.Where, lf.Data})
		}
		p.table("  ", rows)
	}
	const shown = 10
	for i, f := range refs {
		if i == shown {
			p.line("  ... %d more references", len(refs)-shown)
			break
		}
		p.line("  reference  %s", f)
	}
}

// printMounts writes the sandbox's mount table.
func printMounts(p *printer, mounts []specs.Mount) {
	if len(mounts) == 0 {
		p.line("mounts     none recorded")
		return
	}
	p.line("mounts (%d)", len(mounts))
	p.table("  ", append([][]string{{"DESTINATION", "TYPE", "SOURCE", "OPTIONS"}}, mountRows(mounts)...))
}

// mountRows are the table rows of a mount table.
func mountRows(mounts []specs.Mount) [][]string {
	rows := make([][]string, len(mounts))
	for i, m := range mounts {
		rows[i] = []string{m.Destination, m.Type, m.Source, orNone(strings.Join(m.Options, ","))}
	}
	return rows
}

// printCgroup writes the job cgroup and the limits in force in it.
func printCgroup(p *printer, cg *image.Cgroup) {
	if cg == nil {
		p.line("cgroup     none recorded")
		return
	}
	p.line("cgroup     %s %s", cg.Version, cg.Path)
	limits := cgroupLimits(cg.Resources)
	if len(limits) == 0 {
		p.line("  limits     none")
	}
	for _, l := range limits {
		p.line("  %-10s %s", l[0], l[1])
	}
}

// cgroupLimits lists the limits that res sets, as (controller, limits)
// pairs; a negative value is no limit.
func cgroupLimits(res *specs.LinuxResources) [][2]string {
	if res == nil {
		return nil
	}
	unified := maps.Clone(res.Unified)
	take := func(key string) (string, bool) {
		v, ok := unified[key]
		delete(unified, key)
		return v, ok
	}
	var out [][2]string
	var mem []string
	if m := res.Memory; m != nil {
		if m.Limit != nil {
			mem = append(mem, "limit "+limitBytes(*m.Limit))
		}
		if m.Reservation != nil {
			mem = append(mem, "reservation "+limitBytes(*m.Reservation))
		}
		if m.Swap != nil {
			mem = append(mem, "memory+swap "+limitBytes(*m.Swap))
		}
	}
	if v, ok := take("memory.high"); ok {
		mem = append(mem, "high "+unifiedBytes(v))
	}
	if v, ok := take("memory.swap.max"); ok {
		mem = append(mem, "swap "+unifiedBytes(v))
	}
	if len(mem) > 0 {
		out = append(out, [2]string{"memory", strings.Join(mem, ", ")})
	}
	var cpu []string
	if c := res.CPU; c != nil {
		if c.Quota != nil {
			switch {
			case *c.Quota < 0:
				cpu = append(cpu, "quota unlimited")
			case c.Period != nil && *c.Period > 0:
				cpu = append(cpu, fmt.Sprintf("quota %dus per %dus (%.2f CPUs)", *c.Quota, *c.Period, float64(*c.Quota)/float64(*c.Period)))
			default:
				cpu = append(cpu, fmt.Sprintf("quota %dus", *c.Quota))
			}
		} else if c.Period != nil {
			cpu = append(cpu, fmt.Sprintf("period %dus", *c.Period))
		}
		if c.Shares != nil {
			cpu = append(cpu, fmt.Sprintf("shares %d", *c.Shares))
		}
		if c.Cpus != "" {
			cpu = append(cpu, "cpus "+c.Cpus)
		}
		if c.Mems != "" {
			cpu = append(cpu, "mems "+c.Mems)
		}
	}
	if v, ok := take("cpu.weight"); ok {
		cpu = append(cpu, "weight "+v)
	}
	if len(cpu) > 0 {
		out = append(out, [2]string{"cpu", strings.Join(cpu, ", ")})
	}
	if res.Pids != nil && res.Pids.Limit != nil {
		limit := "unlimited"
		if *res.Pids.Limit >= 0 {
			limit = strconv.FormatInt(*res.Pids.Limit, 10)
		}
		out = append(out, [2]string{"pids", "limit " + limit})
	}
	for _, k := range slices.Sorted(maps.Keys(unified)) {
		out = append(out, [2]string{"", k + " " + unified[k]})
	}
	return out
}

// limitBytes shows a byte limit; negative is no limit.
func limitBytes(v int64) string {
	if v < 0 {
		return "unlimited"
	}
	return supervisor.HumanBytes(v)
}

// unifiedBytes shows a byte limit as a v2 file holds it ("max" or bytes).
func unifiedBytes(s string) string {
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		return supervisor.HumanBytes(v)
	}
	if s == "max" {
		return "unlimited"
	}
	return s
}

// printHooks writes the hooks that ran for the generation, "none" for
// none.
func printHooks(p *printer, hooks []image.HookRun) {
	if len(hooks) == 0 {
		p.line("hooks      none")
		return
	}
	p.line("hooks (%d)", len(hooks))
	rows := [][]string{{"EVENT", "COMMAND", "SOURCE", "RESULT", "DURATION", "STARTED"}}
	for _, h := range hooks {
		command := supervisor.CommandLine(append([]string{h.Path}, h.Args...))
		if h.InContainer {
			command += " (in the container)"
		}
		result := "exit " + strconv.Itoa(h.ExitCode)
		switch {
		case h.Error != "" && h.ExitCode < 0:
			result = "failed: " + h.Error
		case h.Error != "":
			result += ": " + h.Error
		}
		rows = append(rows, []string{h.Event, command, h.Source, result, h.Duration.Round(time.Millisecond).String(),
			h.Start.Local().Format(time.DateTime + " MST")})
	}
	p.table("  ", rows)
}

// printGPU shows what the job's GPU processes held.
func printGPU(p *printer, g *image.GPU) {
	if g == nil {
		p.line("gpu        none")
		return
	}
	cuda := ""
	if g.CUDA > 0 {
		cuda = fmt.Sprintf(", CUDA %d.%d", g.CUDA/1000, g.CUDA%1000/10)
	}
	p.line("gpu        driver %s%s, %d processes", g.Driver, cuda, len(g.Processes))
	for _, gp := range g.Processes {
		var devs []string
		for _, d := range gp.Devices {
			devs = append(devs, fmt.Sprintf("%s %s (/dev/nvidia%d)", d.Model, d.UUID, d.Minor))
		}
		if len(devs) == 0 {
			devs = append(devs, "no device open")
		}
		p.line("  pid %-6d %s; device state about %s; lock %v, checkpoint %v", gp.PID, strings.Join(devs, ", "),
			supervisor.HumanBytes(gp.HostBytes), time.Duration(gp.LockNs).Round(time.Millisecond), time.Duration(gp.CheckpointNs).Round(time.Millisecond))
	}
}
