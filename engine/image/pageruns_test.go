package image

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestPageRunsRoundTrip(t *testing.T) {
	for _, runs := range [][]PageRun{
		{},
		{{Addr: 0x400000, Pages: 1, Offset: 0}},
		{{Addr: 0x7f0000000000, Pages: 1 << 20, Offset: 4096, Generation: 3}, {Addr: 0x7f0100000000, Pages: 2, Offset: 1 << 40, Generation: 0}},
	} {
		var b bytes.Buffer
		if err := encodePageRuns(&b, runs); err != nil {
			t.Fatal(err)
		}
		if want := pageRunsHeader + pageRunSize*len(runs); b.Len() != want {
			t.Errorf("%d runs: %d bytes, want %d", len(runs), b.Len(), want)
		}
		got, err := decodePageRuns(bytes.NewReader(b.Bytes()), int64(b.Len()))
		if err != nil {
			t.Fatalf("%d runs: %v", len(runs), err)
		}
		if !slices.Equal(got, runs) {
			t.Errorf("read back %v, want %v", got, runs)
		}
	}
}

func TestPageRunsDamaged(t *testing.T) {
	var good bytes.Buffer
	must(t, encodePageRuns(&good, []PageRun{{Addr: 4096, Pages: 1}, {Addr: 8192, Pages: 2, Generation: 1}}))
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good.Bytes())) }
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "header: unexpected EOF"},
		{"other magic", edit(func(b []byte) []byte { copy(b, "CKPTPZ01"); return b }), "not a page-run file"},
		{"cut short", edit(func(b []byte) []byte { return b[:len(b)-1] }), "says it holds 2 runs, but is 79 bytes long"},
		{"one run too many", edit(func(b []byte) []byte { return append(b, make([]byte, pageRunSize)...) }), "says it holds 2 runs, but is 112 bytes long"},
		{"huge count", edit(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[8:], 1<<62); return b }), "says it holds 4611686018427387904 runs"},
		{"generation out of range", edit(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[pageRunsHeader+24:], 1<<40); return b }), "run 0: generation"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodePageRuns(bytes.NewReader(c.b), int64(len(c.b)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
}

// A process written with WriteProcess reads back whole, its runs kept out
// of its core file; a core file of format 4, which holds its runs, still
// reads.
func TestWriteProcessKeepsRunsApart(t *testing.T) {
	s, err := OpenStore(t.TempDir(), true)
	must(t, err)
	w, err := s.Begin()
	must(t, err)
	defer w.Abort()
	runs := []PageRun{{Addr: 0x10000, Pages: 3, Offset: 0}, {Addr: 0x20000, Pages: 1, Offset: 8192, Generation: 1}}
	p := &Process{PID: 7, Comm: "app", PageRuns: runs}
	ref := ProcessRef{PID: 7, Comm: "app"}
	must(t, w.WriteProcess(p, &ref))
	if !slices.Equal(p.PageRuns, runs) {
		t.Errorf("WriteProcess changed the process's runs to %v", p.PageRuns)
	}
	old := ProcessRef{PID: 8, Comm: "old", Core: CoreName(8)}
	must(t, w.WriteJSON(old.Core, &Process{PID: 8, PageRuns: runs}))
	must(t, w.Commit(&Manifest{Processes: []ProcessRef{ref, old}}))

	g, err := s.Open(w.Gen)
	must(t, err)
	if ref.Core != CoreName(7) || ref.Runs != PageRunsName(7) || !g.Lists(ref.Runs) {
		t.Fatalf("ref = %+v; files %v", ref, g.Manifest.Files)
	}
	core, err := os.ReadFile(g.Path(ref.Core))
	must(t, err)
	var raw map[string]json.RawMessage
	must(t, json.Unmarshal(core, &raw))
	if _, ok := raw["page_runs"]; ok {
		t.Errorf("the core file holds the page runs: %s", core)
	}
	for _, r := range g.Manifest.Processes {
		got, err := g.ReadProcess(r)
		must(t, err)
		if !slices.Equal(got.PageRuns, runs) {
			t.Errorf("pid %d: runs read back %v, want %v", r.PID, got.PageRuns, runs)
		}
	}
}
