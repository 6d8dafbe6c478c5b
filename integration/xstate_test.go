package integration

import (
	"encoding/base64"
	"encoding/binary"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/xstate"
)

// xstateGap is how far TestXStateOtherLayout's made-up CPU places each
// register component from where this CPU places it.
const xstateGap = 64

// TestXStateOtherLayout restarts the avx job, which checks every vector
// register on every iteration, from a generation written as a CPU laying
// out its XSAVE area otherwise would have written it: each component
// xstateGap bytes further on, the area that much longer (a requeue from
// an Intel server part with MPX's gap to one without, or the reverse).
// The restore moves every register to this CPU's place and the job
// finishes with every check passed. The same generation claiming
// register state no CPU has is refused before the job starts, naming it,
// and so is a generation whose nodes enabled less register state than
// this one.
func TestXStateOtherLayout(t *testing.T) {
	e := setup(t)
	here := xstate.Local()
	if len(here) == 0 {
		t.Skip("this CPU has no XSAVE components beyond SSE")
	}
	fl := e.pickFlavor(t, "user-v2", "user-none", "root-v2")
	machine.acquire(t, 2)
	j := newJob(t, e, fl)
	const log, seconds = "job.log", 6
	s := j.launch(nil, e.progs.avx, j.path(log), strconv.Itoa(seconds))
	j.waitLines(s, log, 5)
	c := j.checkpoint()
	s.kill()

	// A job whose nodes enabled less register state than this one: its
	// programs' save areas would overflow here.
	g := openGenEdit(t, j.genDir(c.Generation))
	enabled := g.m.CPU.XFeatures
	last := here[len(here)-1].Index
	g.m.CPU.XFeatures = enabled &^ (1 << last)
	g.reseal()
	s = j.restart()
	if code := s.waitExit(progressTimeout); code == 0 || !s.outputContains("this one adds "+xstate.Name(last)) {
		t.Fatalf("restart exited %d and does not name the register state this node adds:\n%s", code, s.output())
	}
	g.m.CPU.XFeatures = enabled
	g.reseal()

	other := make(xstate.Layout, len(here))
	for i, c := range here {
		other[i] = xstate.Component{Index: c.Index, Offset: c.Offset + xstateGap, Size: c.Size}
	}
	// editAreas rewrites every thread's XSAVE area of the generation.
	editAreas := func(change func(area []byte) []byte) {
		g := openGenEdit(t, j.genDir(c.Generation))
		for _, ref := range g.m.Processes {
			g.editCore(ref.Core, func(core map[string]any) {
				for i := range jsonList(core, "threads") {
					th := jsonObj(core["threads"], i)
					raw, err := base64.StdEncoding.DecodeString(th["xstate"].(string))
					if err != nil {
						t.Fatal(err)
					}
					th["xstate"] = base64.StdEncoding.EncodeToString(change(raw))
				}
			})
		}
	}
	editAreas(func(area []byte) []byte {
		moved, err := xstate.Convert(area, here, len(area)+xstateGap, other)
		if err != nil {
			t.Fatal(err)
		}
		return moved
	})
	g = openGenEdit(t, j.genDir(c.Generation))
	g.m.CPU.XState = other
	g.reseal()
	moved := j.path("moved-generation")
	copyTree(t, j.genDir(c.Generation), moved)

	// alien is a component number no CPU defines; it sits in the gap.
	const alien = 62
	editAreas(func(area []byte) []byte {
		bv := binary.LittleEndian.Uint64(area[xstate.LegacySize:])
		binary.LittleEndian.PutUint64(area[xstate.LegacySize:], bv|1<<alien)
		return area
	})
	g = openGenEdit(t, j.genDir(c.Generation))
	g.m.CPU.XState = append(other, xstate.Component{Index: alien, Offset: xstate.LegacySize + xstate.HeaderSize, Size: 8})
	g.reseal()
	s = j.restart()
	if code := s.waitExit(progressTimeout); code == 0 || !s.outputContains("component 62 state, which this CPU lacks") {
		t.Fatalf("restart exited %d and does not name the register state this CPU lacks:\n%s", code, s.output())
	}

	os.RemoveAll(j.genDir(c.Generation))
	copyTree(t, moved, j.genDir(c.Generation))
	s = j.restart()
	if got := waitRestored(t, s); got != c.Generation {
		t.Fatalf("restored generation %d, want %d:\n%s", got, c.Generation, s.output())
	}
	s.finish(0, 90*time.Second)
	if err := checkAVXLog(j.readFile(log), seconds); err != nil {
		t.Fatalf("job log: %v\n%s", err, s.output())
	}
}
