package engine

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/memory"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/writetrack"
)

// parentPages opens what the parent generation recorded of the pages of
// the process with sandbox pid pid, for an incremental dump: its page runs
// (each pointing at the generation that holds the data) and its checksum
// file, which the caller closes once the dump is done. A process the
// parent did not have, or had without checksums, is dumped in full: that
// is no error.
func parentPages(parent *image.Generation, pid, minGen int) (*memory.Parent, *os.File, error) {
	if parent == nil {
		return nil, nil, nil
	}
	i := slices.IndexFunc(parent.Manifest.Processes, func(r image.ProcessRef) bool { return r.PID == pid })
	if i < 0 || parent.Manifest.Processes[i].Pages == "" || !parent.Lists(image.PageSumsName(pid)) {
		return nil, nil, nil
	}
	img, err := parent.ReadProcess(parent.Manifest.Processes[i])
	if err != nil {
		return nil, nil, fmt.Errorf("pid %d: parent %w", pid, err)
	}
	var pages uint64
	for j := range img.PageRuns {
		if img.PageRuns[j].Generation == 0 {
			img.PageRuns[j].Generation = parent.Gen
		}
		pages += img.PageRuns[j].Pages
	}
	f, err := parent.Open(image.PageSumsName(pid))
	if err != nil {
		return nil, nil, fmt.Errorf("pid %d: parent page checksums: %w", pid, err)
	}
	if fi, err := f.Stat(); err != nil || uint64(fi.Size()) != pages*8 {
		// Not what its runs need: compare with nothing rather than with
		// checksums of other pages.
		f.Close()
		return nil, nil, nil
	}
	return &memory.Parent{Runs: img.PageRuns, Sums: f, MinGen: minGen}, f, nil
}

// recordRefs lists in m the page files of earlier generations that the
// processes' runs read, with the size and checksum the parent's manifest
// vouches for: its own files, and those it refers to in turn.
func recordRefs(m *image.Manifest, parent *image.Generation, procs []*image.Process) error {
	if parent == nil {
		return nil
	}
	m.Parent = parent.Gen
	known := map[image.FileRef]image.FileSum{}
	for _, f := range parent.Manifest.Files {
		known[image.FileRef{Generation: parent.Gen, FileSum: image.FileSum{Name: f.Name}}] = f
	}
	for _, r := range parent.Manifest.Refs {
		known[image.FileRef{Generation: r.Generation, FileSum: image.FileSum{Name: r.Name}}] = r.FileSum
	}
	seen := map[image.FileRef]bool{}
	for _, p := range procs {
		for _, run := range p.PageRuns {
			if run.Generation == 0 {
				continue
			}
			key := image.FileRef{Generation: run.Generation, FileSum: image.FileSum{Name: image.PagesName(p.PID)}}
			if seen[key] {
				continue
			}
			sum, ok := known[key]
			if !ok {
				return fmt.Errorf("pid %d: page run at %#x refers to %s of generation %d, which parent generation %d does not vouch for", p.PID, run.Addr, key.Name, key.Generation, parent.Gen)
			}
			seen[key] = true
			m.Refs = append(m.Refs, image.FileRef{Generation: run.Generation, FileSum: sum})
		}
	}
	slices.SortFunc(m.Refs, func(a, b image.FileRef) int {
		if a.Generation != b.Generation {
			return a.Generation - b.Generation
		}
		return strings.Compare(a.Name, b.Name)
	})
	return nil
}

// trackedRanges are the mappings whose pages write tracking may vouch for:
// private ones (memory.cleanSince).
func trackedRanges(vmas []image.VMA) []writetrack.Range {
	var out []writetrack.Range
	for _, v := range vmas {
		if tracked(v.Kind) {
			out = append(out, writetrack.Range{Start: v.Start, End: v.End})
		}
	}
	return out
}

// tracked says whether write tracking watches mappings of kind k.
func tracked(k image.VMAKind) bool { return k == image.VMAAnon || k == image.VMAFilePrivate }

// rereadRanges are the ranges of tracked mappings whose pages a dump of
// vmas read: those written since the tracking was armed, or never
// watched. The pages it found unchanged are still write-protected.
func rereadRanges(vmas []image.VMA, read []memory.ReadRange) []writetrack.Range {
	var out []writetrack.Range
	for _, r := range read {
		if tracked(vmas[r.VMA].Kind) {
			out = append(out, writetrack.Range{Start: r.Start, End: r.End})
		}
	}
	return out
}

// adoptUffd makes a userfaultfd in the stopped process (user faults only,
// which needs no privilege), copies it to the tracker and closes it in the
// process.
func adoptUffd(rem *inject.Process, t *writetrack.Tracker, hostPID int) error {
	fd, err := rem.Main.Call("userfaultfd", unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK|writetrack.UserModeOnly)
	if err != nil {
		return fmt.Errorf("make a userfaultfd in the process: %w", err)
	}
	local, err := rem.PullFD(fd)
	if _, cerr := rem.Main.Call("close", unix.SYS_CLOSE, fd); err == nil && cerr != nil {
		unix.Close(local)
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("take the process's userfaultfd: %w", err)
	}
	return t.Adopt(hostPID, local)
}
