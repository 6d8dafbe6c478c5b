package engine

import (
	"os"
	"os/exec"
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject/injecttest"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// TestRseqFromGlibc finds a glibc program's rseq area the way kernels
// without PTRACE_GET_RSEQ_CONFIGURATION need, and checks it against what
// that request reports here.
func TestRseqFromGlibc(t *testing.T) {
	if !kernel.Has(kernel.PtraceRseq) {
		t.Skip("this kernel cannot report rseq areas to compare with")
	}
	tr := ptrace.NewTracer()
	defer tr.Close()
	c := injecttest.Start(t, tr)
	want, err := tr.GetRseq(c.PID)
	if err != nil {
		t.Fatal(err)
	}
	if want.Ptr == 0 {
		t.Skip("/bin/sleep's glibc registered no rseq area (glibc before 2.35?)")
	}
	kernel.Adopt(kernel.Current().Without(kernel.PtraceRseq))
	t.Cleanup(func() { kernel.Adopt(nil) })
	f := &rseqFinder{rem: c.Proc, hostPID: c.PID}
	got, err := f.dumpRseq(tr, c.Thread)
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Ptr != want.Ptr || got.Size != want.Size || got.Signature != want.Signature {
		t.Errorf("from glibc: %+v; the kernel says %+v", got, want)
	}
}

// TestRseqFromGlibcTurnedOff checks that a program run with glibc's rseq
// off is found to have no area, as jobs launched on old kernels are.
func TestRseqFromGlibcTurnedOff(t *testing.T) {
	tr := ptrace.NewTracer()
	defer tr.Close()
	cmd := exec.Command("/bin/sleep", "1000")
	cmd.Env = append(os.Environ(), "GLIBC_TUNABLES="+RseqTunable)
	c := injecttest.StartCmd(t, tr, cmd)
	if kernel.Has(kernel.PtraceRseq) {
		if cfg, err := tr.GetRseq(c.PID); err != nil || cfg.Ptr != 0 {
			t.Fatalf("with %s the kernel reports rseq %+v, %v", RseqTunable, cfg, err)
		}
	}
	kernel.Adopt(kernel.Current().Without(kernel.PtraceRseq))
	t.Cleanup(func() { kernel.Adopt(nil) })
	f := &rseqFinder{rem: c.Proc, hostPID: c.PID}
	if got, err := f.dumpRseq(tr, c.Thread); err != nil || got != nil {
		t.Errorf("from glibc with rseq off: %+v, %v; want none", got, err)
	}
}
