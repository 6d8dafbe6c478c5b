package engine

import (
	"errors"
	"strings"
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// validProcess is a small process image that passes validation.
func validProcess() *image.Process {
	return &image.Process{
		PID: 2, PPID: 1, PGID: 2, SID: 2,
		Exe: image.FileID{Path: "/bin/app"}, Cwd: "/home/u", Root: "/",
		Threads: []image.Thread{{TID: 2, Regs: image.Regs{Rip: 0x401000}}, {TID: 3}},
		VMAs: []image.VMA{
			{Start: 0x400000, End: 0x402000, Prot: 5, Kind: image.VMAFilePrivate, File: &image.FileID{Path: "/bin/app"}},
			{Start: 0x600000, End: 0x700000, Prot: 3, Kind: image.VMAAnon},
			{Start: 0xffffffffff600000, End: 0xffffffffff601000, Kind: image.VMAVsyscall},
		},
		PageRuns:    []image.PageRun{{Addr: 0x600000, Pages: 2}, {Addr: 0x610000, Pages: 1, Offset: 2 * pageSize}},
		MM:          image.MM{StartBrk: 0x600000, Brk: 0x601000, Auxv: []uint64{6, 4096, 0, 0}},
		Files:       []image.FD{{Num: 0, Kind: image.FDStdio}, {Num: 3, Kind: image.FDFile, Path: "/tmp/out"}},
		Sigactions:  []image.Sigaction{{Signal: 10}},
		Rlimits:     []image.Rlimit{{Resource: 7, Cur: 1024, Max: 4096}},
		Itimers:     []image.Itimer{{Which: 0}},
		PosixTimers: []image.PosixTimer{{ID: 0, Signal: 14}},
	}
}

func TestValidateImage(t *testing.T) {
	tests := []struct {
		name   string
		change func(p *image.Process)
		want   string // "" for an image that passes
	}{
		{"valid", func(*image.Process) {}, ""},
		{"pid 0", func(p *image.Process) { p.PID, p.Threads[0].TID = 0, 0 }, "pid 0 is not a pid"},
		{"pid 1", func(p *image.Process) { p.PID, p.Threads[0].TID = 1, 1 }, "sandbox's init"},
		{"huge pid", func(p *image.Process) { p.PID, p.Threads[0].TID = 1<<30, 1<<30 }, "is not a pid of this node"},
		{"negative parent", func(p *image.Process) { p.PPID = -4 }, "parent -4"},
		{"unknown state", func(p *image.Process) { p.State = "flying" }, `unknown state "flying"`},
		{"no threads", func(p *image.Process) { p.Threads = nil }, "0 threads"},
		{"100000 threads", func(p *image.Process) {
			p.Threads = make([]image.Thread, 100000)
			for i := range p.Threads {
				p.Threads[i].TID = 2 + i
			}
		}, "100000 threads"},
		{"first thread not main", func(p *image.Process) { p.Threads[0].TID = 9 }, "not the process's main thread"},
		{"tid twice", func(p *image.Process) { p.Threads[1].TID = 2 }, "tid 2 is also an id of pid 2"},
		{"huge xstate", func(p *image.Process) { p.Threads[0].XState = make([]byte, 1<<20) }, "XSAVE area"},
		{"short siginfo", func(p *image.Process) { p.Threads[1].Pending = []image.SigInfo{{Raw: []byte{1}}} }, "siginfo of 1 bytes"},
		{"rseq in kernel space", func(p *image.Process) { p.Threads[0].Rseq = &image.Rseq{Ptr: 1 << 63, Size: 32} }, "rseq area"},
		{"rip in kernel space", func(p *image.Process) { p.Threads[0].Regs.Rip = 0xffffffff81000000 }, "rip"},
		{"mapping at 0", func(p *image.Process) { p.VMAs[0].Start = 0; p.VMAs[0].End = 0 }, "empty or reversed"},
		{"mapping in kernel space", func(p *image.Process) { p.VMAs[1].End = 0xffff800000000000 }, "beyond the user address space"},
		{"unaligned mapping", func(p *image.Process) { p.VMAs[1].Start = 0x600123 }, "not page-aligned"},
		{"overlapping mappings", func(p *image.Process) { p.VMAs[1].Start = 0x401000 }, "overlaps"},
		{"unknown mapping kind", func(p *image.Process) { p.VMAs[1].Kind = "magic" }, `unknown kind "magic"`},
		{"mapping below mmap_min_addr", func(p *image.Process) { p.VMAs[0].Start = 0 }, "lowest address"},
		{"file mapping without its file", func(p *image.Process) { p.VMAs[0].File = nil }, "without its file"},
		{"relative mapped path", func(p *image.Process) { p.VMAs[0].File.Path = "../../etc/passwd" }, "not absolute"},
		{"mapped path with ..", func(p *image.Process) { p.VMAs[0].File.Path = "/lib/../../etc/passwd" }, "not clean"},
		{"relative executable", func(p *image.Process) { p.Exe.Path = "app" }, "executable: path"},
		{"cwd with ..", func(p *image.Process) { p.Cwd = "/home/u/../../root" }, "cwd: path"},
		{"bad protection", func(p *image.Process) { p.VMAs[1].Prot = 0x80 }, "protection"},
		{"page run in kernel space", func(p *image.Process) { p.PageRuns[1].Addr = 0xffffffff00000000 }, "beyond the user address space"},
		{"page run overflowing", func(p *image.Process) { p.PageRuns[1].Pages = 1 << 60 }, "pages"},
		{"page run at a wrong offset", func(p *image.Process) { p.PageRuns[1].Offset = 1 << 40 }, "offset"},
		{"page run of another generation", func(p *image.Process) { p.PageRuns[0].Generation = 3 }, "generation 3"},
		{"brk in kernel space", func(p *image.Process) { p.MM.Brk = 1 << 62 }, "brk"},
		{"odd auxv", func(p *image.Process) { p.MM.Auxv = []uint64{1, 2, 3} }, "auxv of 3 words"},
		{"fd 2^31", func(p *image.Process) { p.Files[1].Num = 1 << 31 }, "beyond the kernel's limit"},
		{"negative fd", func(p *image.Process) { p.Files[1].Num = -1 }, "fd -1"},
		{"fd twice", func(p *image.Process) { p.Files[1].Num = 0 }, "fd 0 appears twice"},
		{"relative fd path", func(p *image.Process) { p.Files[1].Path = "out" }, "not absolute"},
		{"fd path with NUL", func(p *image.Process) { p.Files[1].Path = "/tmp/out\x00x" }, "NUL"},
		{"fd path unlike its record", func(p *image.Process) { p.Files[1].File = &image.FileID{Path: "/tmp/other"} }, "its file record names"},
		{"unknown device", func(p *image.Process) { p.Files[1] = image.FD{Num: 3, Kind: image.FDDevice, Path: "/dev/sda"} }, "/dev/sda"},
		{"stdio 7", func(p *image.Process) { p.Files[0].Stdio = 7 }, "stdio 7"},
		{"unknown fd kind", func(p *image.Process) { p.Files[1].Kind = "magic" }, `unknown kind "magic"`},
		{"contents outside the manifest", func(p *image.Process) {
			p.Files[1] = image.FD{Num: 3, Kind: "memfd", Contents: &image.FileContents{Data: "../../x"}}
		}, "not in the manifest's file list"},
		{"memfd without its state", func(p *image.Process) { p.Files[1] = image.FD{Num: 3, Kind: image.FDMemfd, OFD: 7} }, "without its state"},
		{"negative offset", func(p *image.Process) { p.Files[1].Pos = -5 }, "offset -5"},
		{"signal 0", func(p *image.Process) { p.Sigactions[0].Signal = 0 }, "signal 0"},
		{"signal 65", func(p *image.Process) { p.Sigactions[0].Signal = 65 }, "signal 65"},
		{"parent-death signal", func(p *image.Process) { p.PdeathSignal = 99 }, "parent-death signal 99"},
		{"rlimit resource", func(p *image.Process) { p.Rlimits[0].Resource = 99 }, "resource 99"},
		{"itimer", func(p *image.Process) { p.Itimers[0].Which = 7 }, "timer 7"},
		{"negative timer id", func(p *image.Process) { p.PosixTimers[0].ID = -1 }, "id -1"},
		{"zombie with anything", func(p *image.Process) { p.State = image.ProcZombie; p.Threads = nil }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validProcess()
			tt.change(p)
			gen := &image.Generation{Gen: 4, Manifest: &image.Manifest{Processes: []image.ProcessRef{{PID: p.PID}}, Files: pageFiles(2)}}
			err := validateImage(gen, []*image.Process{p})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ie *ImageError
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "generation 4") {
				t.Fatalf("err = %v, want an ImageError naming generation 4 and %q", err, tt.want)
			}
		})
	}
}

// pageFiles lists the page files of validProcess's runs for pids.
func pageFiles(pids ...int) []image.FileSum {
	var out []image.FileSum
	for _, pid := range pids {
		out = append(out, image.FileSum{Name: image.PagesName(pid), Size: 3 * pageSize})
	}
	return out
}

func TestValidateJob(t *testing.T) {
	a, b := validProcess(), validProcess()
	b.PID, b.Threads = 3, []image.Thread{{TID: 3}}
	gen := &image.Generation{Gen: 1, Manifest: &image.Manifest{Processes: []image.ProcessRef{{PID: 2}, {PID: 3}}, Files: pageFiles(2, 3, 4)}}
	err := validateImage(gen, []*image.Process{a, b})
	if err == nil || !strings.Contains(err.Error(), "also a thread of pid 2") {
		t.Fatalf("a pid that is another process's tid: err = %v", err)
	}
	gen.Manifest.Processes[1].PID = 5
	b.PID, b.Threads[0].TID = 4, 4
	if err := validateImage(gen, []*image.Process{a, b}); err == nil || !strings.Contains(err.Error(), "core file is that of pid 4") {
		t.Fatalf("a core that is another pid's: err = %v", err)
	}
}

// TestValidateSharedState: a descriptor inherited across fork shares its
// open file description, whose state only the first one carries.
func TestValidateSharedState(t *testing.T) {
	a, b := validProcess(), validProcess()
	b.PID, b.PPID, b.Threads = 5, 2, []image.Thread{{TID: 5}}
	a.Files = append(a.Files, image.FD{Num: 4, Kind: image.FDMemfd, OFD: 9, Contents: &image.FileContents{Data: "memfd-1.img"}})
	b.Files = append(b.Files, image.FD{Num: 4, Kind: image.FDMemfd, OFD: 9})
	gen := &image.Generation{Gen: 1, Manifest: &image.Manifest{
		Processes: []image.ProcessRef{{PID: 2}, {PID: 5}},
		Files:     append(pageFiles(2, 5), image.FileSum{Name: "memfd-1.img"}),
	}}
	if err := validateImage(gen, []*image.Process{a, b}); err != nil {
		t.Fatalf("a memfd shared across fork refused: %v", err)
	}
}

func TestValidatePageEncoding(t *testing.T) {
	pages := image.PagesName(2)
	for _, tt := range []struct {
		name string
		file image.FileSum
		want string
	}{
		{"compressed smaller than its data", image.FileSum{Name: pages, Size: 100, Codec: image.CodecZstd, DataSize: 3 * pageSize}, ""},
		{"runs beyond the data", image.FileSum{Name: pages, Size: 9 * pageSize, Codec: image.CodecZstd, DataSize: pageSize}, "are not in its own page file"},
		{"unknown codec", image.FileSum{Name: pages, Size: 100, Codec: "lz4", DataSize: 3 * pageSize}, `encoded with "lz4"`},
		{"data size without codec", image.FileSum{Name: pages, Size: 3 * pageSize, DataSize: 3 * pageSize}, "without a codec"},
		{"data size not in pages", image.FileSum{Name: pages, Size: 100, Codec: image.CodecZstd, DataSize: 3*pageSize + 1}, "data_size"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			gen := &image.Generation{Gen: 4, Manifest: &image.Manifest{Processes: []image.ProcessRef{{PID: 2}}, Files: []image.FileSum{tt.file}}}
			err := validateImage(gen, []*image.Process{validProcess()})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
