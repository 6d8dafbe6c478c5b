package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// genEdit changes one generation of a checkpoint directory the way a
// broken disk or a hostile hand would. Changes through reseal keep the
// file list and the manifest checksum matching, so that what is left to
// catch them is the restart's checking of every value and name.
type genEdit struct {
	t   *testing.T
	dir string
	m   image.Manifest
}

func openGenEdit(t *testing.T, dir string) *genEdit {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, image.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	g := &genEdit{t: t, dir: dir}
	if err := json.Unmarshal(b, &g.m); err != nil {
		t.Fatal(err)
	}
	return g
}

// mainCore is the core file of the job's first process.
func (g *genEdit) mainCore() string { return g.m.Processes[0].Core }

// path names a file of the generation.
func (g *genEdit) path(name string) string { return filepath.Join(g.dir, name) }

// editCore decodes a core file, lets change edit it, and writes it back
// resealed. Numbers stay json.Number, so registers keep every bit.
func (g *genEdit) editCore(name string, change func(core map[string]any)) {
	g.t.Helper()
	b, err := os.ReadFile(g.path(name))
	if err != nil {
		g.t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	core := map[string]any{}
	if err := dec.Decode(&core); err != nil {
		g.t.Fatal(err)
	}
	change(core)
	if b, err = json.Marshal(core); err != nil {
		g.t.Fatal(err)
	}
	// An edit of a field the format does not have would test nothing.
	strict := json.NewDecoder(bytes.NewReader(b))
	strict.DisallowUnknownFields()
	if err := strict.Decode(new(image.Process)); err != nil {
		g.t.Fatalf("the edited core is not one of the image format: %v", err)
	}
	g.writeData(name, b)
}

// editRuns lets change edit the main process's page-run file (the
// 16-byte header, then 32 bytes per run) and writes it back resealed.
func (g *genEdit) editRuns(change func(b []byte) []byte) {
	g.t.Helper()
	name := g.m.Processes[0].Runs
	if name == "" {
		g.t.Fatal("the main process has no page-run file")
	}
	b, err := os.ReadFile(g.path(name))
	if err != nil {
		g.t.Fatal(err)
	}
	if len(b) < 16+32 {
		g.t.Fatalf("%s holds no run (%d bytes)", name, len(b))
	}
	g.writeData(name, change(b))
}

// writeData replaces a data file and its entry in the file list.
func (g *genEdit) writeData(name string, b []byte) {
	g.t.Helper()
	if err := os.WriteFile(g.path(name), b, 0o600); err != nil {
		g.t.Fatal(err)
	}
	sum := hex.EncodeToString(binary.BigEndian.AppendUint64(nil, xxhash.Sum64(b)))
	for i := range g.m.Files {
		if g.m.Files[i].Name == name {
			g.m.Files[i].Size, g.m.Files[i].XXH64 = int64(len(b)), sum
		}
	}
	g.reseal()
}

// reseal writes the manifest with a matching checksum.
func (g *genEdit) reseal() {
	g.t.Helper()
	m := g.m
	m.ManifestSHA256 = ""
	b, err := json.Marshal(&m)
	if err != nil {
		g.t.Fatal(err)
	}
	s := sha256.Sum256(b)
	g.m.ManifestSHA256 = hex.EncodeToString(s[:])
	g.writeManifest()
}

// writeManifest writes the manifest as it is, checksum included.
func (g *genEdit) writeManifest() {
	g.t.Helper()
	b, err := json.MarshalIndent(&g.m, "", "  ")
	if err != nil {
		g.t.Fatal(err)
	}
	if err := os.WriteFile(g.path(image.ManifestName), b, 0o600); err != nil {
		g.t.Fatal(err)
	}
}

// jsonList and jsonObj reach into a decoded core.
func jsonList(v any, key string) []any { return v.(map[string]any)[key].([]any) }
func jsonObj(v any, i int) map[string]any {
	return v.([]any)[i].(map[string]any)
}

// firstFileFD is the index in the core's files of the first descriptor
// of a regular file (the counter's log).
func firstFileFD(t *testing.T, core map[string]any) int {
	for i, f := range core["files"].([]any) {
		if f.(map[string]any)["kind"] == "file" {
			return i
		}
	}
	t.Fatal("the core has no file descriptor of kind file")
	return -1
}

// hostileCase is one damaged or hand-made newest generation: the restart
// must refuse it before it starts anything, naming what is wrong (want,
// any of them), and restore the generation before it.
type hostileCase struct {
	name   string
	change func(t *testing.T, g *genEdit, victim string)
	want   []string
}

var hostileCases = []hostileCase{
	// Damage that the checksums catch.
	{"page file truncated", func(t *testing.T, g *genEdit, _ string) {
		p := largestPageFile(t, g.dir)
		fi, _ := os.Stat(p)
		os.Truncate(p, fi.Size()/2)
	}, []string{"truncated"}},
	{"core file deleted", func(t *testing.T, g *genEdit, _ string) { os.Remove(g.path(g.mainCore())) },
		[]string{"missing"}},
	{"core file replaced by a symlink", func(t *testing.T, g *genEdit, victim string) {
		c := g.path(g.mainCore())
		os.Rename(c, victim+".core")
		os.Symlink(victim+".core", c)
	}, []string{"not a regular file", "symbolic link"}},
	{"manifest changed", func(t *testing.T, g *genEdit, _ string) {
		g.m.Job.Argv = append(g.m.Job.Argv, "--evil")
		g.writeManifest()
	}, []string{"manifest_sha256 does not match"}},
	{"manifest checksum removed", func(t *testing.T, g *genEdit, _ string) {
		g.m.ManifestSHA256 = ""
		g.writeManifest()
	}, []string{"no manifest_sha256"}},
	{"manifest truncated", func(t *testing.T, g *genEdit, _ string) {
		p := g.path(image.ManifestName)
		b, _ := os.ReadFile(p)
		os.WriteFile(p, b[:len(b)/2], 0o600)
	}, []string{"not valid JSON"}},
	{"generation renamed", func(t *testing.T, g *genEdit, _ string) {
		g.m.Generation += 100
		g.reseal()
	}, []string{"renamed or copied"}},

	// Names that lead out of the generation, resealed.
	{"core name ../../", func(t *testing.T, g *genEdit, victim string) {
		copyFile(g.path(g.mainCore()), victim+".core", 0o600)
		g.m.Processes[0].Core = "../../" + filepath.Base(victim) + ".core"
		g.reseal()
	}, []string{"must not contain a slash"}},
	{"page file name absolute", func(t *testing.T, g *genEdit, _ string) {
		g.m.Processes[0].Pages = "/etc/passwd"
		g.reseal()
	}, []string{"must not contain a slash"}},
	{"core not in the file list", func(t *testing.T, g *genEdit, _ string) {
		var kept []image.FileSum
		for _, f := range g.m.Files {
			if f.Name != g.mainCore() {
				kept = append(kept, f)
			}
		}
		g.m.Files = kept
		g.reseal()
	}, []string{"which the file list does not have"}},
	{"saved node-local file named ../", func(t *testing.T, g *genEdit, _ string) {
		if len(g.m.LocalFiles) == 0 {
			t.Fatal("the generation saved no node-local file (the job's log on this disk)")
		}
		g.m.LocalFiles[0].Data = "../" + g.m.LocalFiles[0].Data
		g.reseal()
	}, []string{"must not contain a slash"}},

	// Values out of range in a resealed core.
	{"pid 0", func(t *testing.T, g *genEdit, _ string) {
		g.editCore(g.mainCore(), func(c map[string]any) { c["pid"] = 0 })
	}, []string{"core file is that of pid 0"}},
	{"tid 0", func(t *testing.T, g *genEdit, _ string) {
		g.editCore(g.mainCore(), func(c map[string]any) { jsonObj(c["threads"], 0)["tid"] = 0 })
	}, []string{"threads[0]"}},
	{"100000 threads", func(t *testing.T, g *genEdit, _ string) {
		g.editCore(g.mainCore(), func(c map[string]any) {
			th := jsonList(c, "threads")
			pid, _ := strconv.Atoi(string(c["pid"].(json.Number)))
			many := make([]any, 100000)
			for i := range many {
				t := map[string]any{}
				for k, v := range th[0].(map[string]any) {
					t[k] = v
				}
				t["tid"] = pid + i
				many[i] = t
			}
			c["threads"] = many
		})
	}, []string{"100000 threads"}},
	{"mapping at 0", func(t *testing.T, g *genEdit, _ string) {
		g.editCore(g.mainCore(), func(c map[string]any) { jsonObj(c["vmas"], 0)["start"] = 0 })
	}, []string{"lowest address"}},
	{"mapping in kernel space", func(t *testing.T, g *genEdit, _ string) {
		g.editCore(g.mainCore(), func(c map[string]any) {
			v := jsonObj(c["vmas"], 0)
			v["start"], v["end"] = uint64(0xffff888000000000), uint64(0xffff888000001000)
		})
	}, []string{"beyond the user address space", "overlaps"}},
	{"fd 2^31", func(t *testing.T, g *genEdit, _ string) {
		g.editCore(g.mainCore(), func(c map[string]any) { jsonObj(c["files"], firstFileFD(t, c))["fd"] = 1 << 31 })
	}, []string{"beyond the kernel's limit"}},
	{"negative file offset", func(t *testing.T, g *genEdit, _ string) {
		g.editCore(g.mainCore(), func(c map[string]any) { jsonObj(c["files"], firstFileFD(t, c))["pos"] = -5 })
	}, []string{"offset -5"}},
	{"fd path with ..", func(t *testing.T, g *genEdit, victim string) {
		g.editCore(g.mainCore(), func(c map[string]any) {
			jsonObj(c["files"], firstFileFD(t, c))["path"] = filepath.Dir(victim) + "/../" + filepath.Base(filepath.Dir(victim)) + "/" + filepath.Base(victim)
		})
	}, []string{"not clean"}},
	{"fd path changed to another file", func(t *testing.T, g *genEdit, victim string) {
		g.editCore(g.mainCore(), func(c map[string]any) { jsonObj(c["files"], firstFileFD(t, c))["path"] = victim })
	}, []string{"its file record names"}},
	{"executable path relative", func(t *testing.T, g *genEdit, _ string) {
		g.editCore(g.mainCore(), func(c map[string]any) { c["exe"].(map[string]any)["path"] = "../../bin/sh" })
	}, []string{"executable: path"}},
	{"signal 99", func(t *testing.T, g *genEdit, _ string) {
		g.editCore(g.mainCore(), func(c map[string]any) { jsonObj(c["sigactions"], 0)["sig"] = 99 })
	}, []string{"signal 99"}},
	{"page run past its file", func(t *testing.T, g *genEdit, _ string) {
		g.editRuns(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[16+16:], 1<<40); return b })
	}, []string{"offset", "page file"}},
	{"page-run file cut short", func(t *testing.T, g *genEdit, _ string) {
		g.editRuns(func(b []byte) []byte { return b[:len(b)-8] })
	}, []string{"runs, but is", "bytes long"}},
	{"page runs in the core file as well", func(t *testing.T, g *genEdit, _ string) {
		g.editCore(g.mainCore(), func(c map[string]any) {
			c["page_runs"] = []any{map[string]any{"addr": 4096, "pages": 1, "offset": 0}}
		})
	}, []string{"holds page runs though they are in"}},
	{"core not JSON", func(t *testing.T, g *genEdit, _ string) { g.writeData(g.mainCore(), []byte("{\"pid\": ")) },
		[]string{"unexpected end of JSON", "unexpected EOF"}},
}

// hostileStartedCases pass every check and fail only once the processes
// exist: those are torn down before the older generation is tried.
var hostileStartedCases = []hostileCase{
	{"code segment the kernel refuses", func(t *testing.T, g *genEdit, _ string) {
		g.editCore(g.mainCore(), func(c map[string]any) {
			jsonObj(c["threads"], 0)["regs"].(map[string]any)["Cs"] = 0x1234
		})
	}, []string{"registers", "input/output error"}},
	// Page data is verified as the restore reads it, before any of the
	// job runs (its size before the restore starts: see truncated).
	{"page file byte flipped", func(t *testing.T, g *genEdit, _ string) { flipByte(t, largestPageFile(t, g.dir)) },
		[]string{"checksum mismatch"}},
}

// TestHostileImages restarts a job whose newest generation was damaged or
// edited by hand, one way per case: every one must be refused before any
// process of it starts, with an error that names what is wrong, and the
// generation before it restored; a file outside the checkpoint that the
// edited image points at is never touched.
func TestHostileImages(t *testing.T) {
	e := setup(t)
	fl := e.pickFlavor(t, "user-v2", "user-none", "root-v2")
	machine.acquire(t, 1)
	j := newJob(t, e, fl)
	const log = "job.log"
	s := counterJob(j)
	j.waitLines(s, log, 20)
	c1 := j.checkpoint()
	j.waitLines(s, log, j.lines(log)+30)
	c2 := j.checkpoint()
	s.kill()

	// Each case starts from these copies, as the user who owns the job.
	pristine := j.path("ckpt.pristine")
	for _, c := range [][]string{{j.ckptDir, pristine}, {j.path(log), j.path(log + ".pristine")}} {
		copyTree(t, c[0], c[1])
	}
	victimText := []byte("a file of the user's that no restart may change\n")
	type run struct {
		hostileCase
		started bool
	}
	var runs []run
	for _, c := range hostileCases {
		runs = append(runs, run{c, false})
	}
	for _, c := range hostileStartedCases {
		runs = append(runs, run{c, true})
	}
	for _, tc := range runs {
		t.Run(tc.name, func(t *testing.T) {
			jc := *j
			jc.t = t
			for _, c := range [][]string{{pristine, j.ckptDir}, {j.path(log + ".pristine"), j.path(log)}} {
				os.RemoveAll(c[1])
				copyTree(t, c[0], c[1])
			}
			victim := j.path("victim.txt")
			os.Remove(victim + ".core")
			if err := os.WriteFile(victim, victimText, 0o644); err != nil {
				t.Fatal(err)
			}
			tc.change(t, openGenEdit(t, j.genDir(c2.Generation)), victim)

			s := jc.restart()
			restored := waitRestored(t, s)
			out := s.output()
			if restored != c1.Generation {
				t.Fatalf("restored generation %d, want %d (the one before the edited generation):\n%s", restored, c1.Generation, out)
			}
			if !mentionsAny(out, tc.want) {
				t.Errorf("the restart does not say what is wrong with generation %d (want one of %q):\n%s", c2.Generation, tc.want, out)
			}
			if !tc.started && !strings.Contains(out, "not started") && !strings.Contains(out, "unusable") {
				t.Errorf("the restart does not say it refused generation %d before starting it:\n%s", c2.Generation, out)
			}
			if tc.started || strings.Contains(out, "not started") {
				// It verified: the restart marked it, and the next
				// requeue tries it last.
				for _, l := range jc.list() {
					if l.Generation == c2.Generation && l.RestoreFailed == "" {
						t.Errorf("list does not mark generation %d as failed to restore", c2.Generation)
					}
				}
			}
			// The job goes on from the generation before: its count
			// continues with no gap or repeat.
			jc.waitLines(s, log, jc.lines(log)+10)
			s.kill()
			b := jc.readFile(log)
			if err := checkSequence(b, 1, bytes.Count(b, []byte{'\n'}), parseCounterLine); err != nil {
				t.Errorf("the job's log after restoring generation %d: %v", c1.Generation, err)
			}
			if b, _ := os.ReadFile(victim); !bytes.Equal(b, victimText) {
				t.Errorf("the restart changed %s, which only the edited image named: %q", victim, b)
			}
		})
	}
}

// waitRestored waits for the restart to say which generation it restored
// and returns it; a restart that ends first fails the test.
func waitRestored(t *testing.T, s *supervisor) int {
	t.Helper()
	deadline := time.Now().Add(progressTimeout)
	for {
		out := s.output()
		if i := strings.Index(out, "restored generation "); i >= 0 {
			f := strings.FieldsFunc(out[i+len("restored generation "):], func(r rune) bool { return r < '0' || r > '9' })
			if len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
		if s.exited() {
			t.Fatalf("%s ended (%s) without restoring a generation:\n%s", s.name, s.status(), out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s restored nothing in %v:\n%s", s.name, progressTimeout, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
