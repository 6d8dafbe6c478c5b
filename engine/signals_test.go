package engine

import (
	"bytes"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/abi"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject/injecttest"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

const sigRTMin = 34

// sigqueue queues sig for process pid with si_code SI_QUEUE and value v.
func sigqueue(t *testing.T, pid int, sig unix.Signal, v uint64) {
	t.Helper()
	var si [ptrace.SiginfoSize]byte
	code := int32(-1) // SI_QUEUE
	abi.PutU32(si[0:], uint32(sig))
	abi.PutU32(si[8:], uint32(code))
	abi.PutU32(si[16:], uint32(unix.Getpid()))
	abi.PutU64(si[24:], v)
	if _, _, e := unix.Syscall(unix.SYS_RT_SIGQUEUEINFO, uintptr(pid), uintptr(sig), uintptr(unsafe.Pointer(&si[0]))); e != 0 {
		t.Fatalf("rt_sigqueueinfo(%d, %d): %v", pid, sig, e)
	}
}

func siginfoSummary(raws []image.SigInfo) [][3]int64 {
	var out [][3]int64
	for _, s := range raws {
		shared := int64(0)
		if s.Shared {
			shared = 1
		}
		out = append(out, [3]int64{shared, int64(int32(le32(s.Raw[0:]))), int64(le32(s.Raw[24:]))})
	}
	return out
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// TestPendingSignalsRoundTrip queues signals in one stopped child, records
// them, queues them again in a second child whose mask blocks nothing, and
// checks that the second child's queues hold the same siginfo, in order.
func TestPendingSignalsRoundTrip(t *testing.T) {
	tr := ptrace.NewTracer()
	defer tr.Close()
	a := injecttest.Start(t, tr)
	if err := tr.SetSigmask(a.PID, ^uint64(0)); err != nil {
		t.Fatal(err)
	}
	sigqueue(t, a.PID, sigRTMin+1, 7)
	sigqueue(t, a.PID, sigRTMin+1, 8)
	sigqueue(t, a.PID, unix.SIGUSR1, 1)
	sigqueue(t, a.PID, unix.SIGUSR1, 2) // a standard signal queues once
	if err := unix.Tgkill(a.PID, a.PID, unix.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	a.Thread.Deferred = []unix.Signal{unix.SIGWINCH}
	pending, err := dumpPending(tr, a.Thread, true)
	if err != nil {
		t.Fatal(err)
	}
	want := [][3]int64{{0, int64(unix.SIGUSR2), 0}, {0, int64(unix.SIGWINCH), 0}, {1, sigRTMin + 1, 7}, {1, sigRTMin + 1, 8}, {1, int64(unix.SIGUSR1), 1}}
	if got := siginfoSummary(pending); !equalSummaries(got, want) {
		t.Fatalf("dumped %v, want %v (shared, signal, value)", got, want)
	}

	b := injecttest.Start(t, tr)
	if err := tr.SetSigmask(b.PID, 0); err != nil {
		t.Fatal(err)
	}
	p := &image.Process{PID: b.PID, Threads: []image.Thread{{TID: b.PID, Pending: pending}}}
	r := restorerFor(tr, b, p)
	if err := r.restorePending(p); err != nil {
		t.Fatal(err)
	}
	// One more injected step: with the signals unblocked, it must not
	// take any of them off the queues.
	if _, err := b.Thread.Call("getpid", unix.SYS_GETPID); err != nil {
		t.Fatal(err)
	}
	if mask, _ := tr.GetSigmask(b.PID); mask != 0 {
		t.Fatalf("mask after injection %#x, want the thread's own 0", mask)
	}
	th, err := tr.NewThread(b.PID, b.Thread.Gadget)
	if err != nil {
		t.Fatal(err)
	}
	got, err := dumpPending(tr, th, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(pending) {
		t.Fatalf("restored %v, want %v", siginfoSummary(got), siginfoSummary(pending))
	}
	for i := range got {
		if got[i].Shared != pending[i].Shared || !bytes.Equal(got[i].Raw, pending[i].Raw) {
			t.Errorf("signal %d: restored %v % x, want %v % x", i, got[i].Shared, got[i].Raw[:32], pending[i].Shared, pending[i].Raw[:32])
		}
	}
}

func equalSummaries(a, b [][3]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCheckSiginfo(t *testing.T) {
	mk := func(sig int32) []byte {
		b := make([]byte, ptrace.SiginfoSize)
		abi.PutU32(b, uint32(sig))
		return b
	}
	tests := []struct {
		raw  []byte
		want int
		err  bool
	}{
		{mk(10), 10, false},
		{mk(64), 64, false},
		{mk(int32(unix.SIGKILL)), 0, true},
		{mk(int32(unix.SIGSTOP)), 0, true},
		{mk(0), 0, true},
		{mk(65), 0, true},
		{make([]byte, 12), 0, true},
	}
	for _, tt := range tests {
		got, err := checkSiginfo(tt.raw)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("checkSiginfo(signal %d, %d bytes) = %d, %v; want %d, error %v", le32(append(tt.raw, 0, 0, 0, 0)), len(tt.raw), got, err, tt.want, tt.err)
		}
	}
}
