package fds

import (
	"os"
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject/injecttest"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// TestStdioRoundTrip records a descriptor sharing the supervisor's stdout
// as that stream, and restores it as a copy of the restarting
// supervisor's stream, which the stub starts with on fd 1.
func TestStdioRoundTrip(t *testing.T) {
	tr := ptrace.NewTracer()
	defer tr.Close()
	// The supervisor is the test process, its stdout whatever go test
	// gave it; the job's fd 3 shares it.
	a := injecttest.Start(t, tr, os.Stdout)
	img := &image.Process{PID: a.PID}
	d := NewDumper(DumpOptions{Writer: newWriter(t), Stdio: Stdio{PID: os.Getpid()}})
	defer d.Close()
	if err := d.Dump(a.Proc, img); err != nil {
		t.Fatal(err)
	}
	f := given(img.Files, 1)
	if len(f) != 1 || f[0].Kind != image.FDStdio || f[0].Stdio != 1 {
		t.Fatalf("fd 3 dumped as %+v, want the supervisor's stdout", f)
	}
	b := injecttest.Start(t, tr)
	stubOut, err := getFD(b.Proc, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer stubOut.Close()
	jr, err := NewRestorer(nil, []*image.Process{img})
	if err != nil {
		t.Fatal(err)
	}
	if err := jr.Restore(b.Proc, img); err != nil {
		t.Fatal(err)
	}
	if !inject.SameOpenFile(os.Getpid(), int(stubOut.Fd()), b.PID, 3) {
		t.Errorf("fd 3 of the restored process is not the stdout it started with")
	}
}
