package engine

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/abi"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject/injecttest"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

func TestParseProcTimers(t *testing.T) {
	tests := []struct {
		name, text string
		want       []procTimer
		err        string
	}{
		{"none", "", nil, ""},
		{"signal to a thread",
			"ID: 0\nsignal: 37/00000000deadbeef\nnotify: signal/tid.12559\nClockID: 1\n",
			[]procTimer{{ID: 0, Signal: 37, Value: 0xdeadbeef, Notify: sigevSignal | sigevThreadID, Target: 12559, Clock: 1}}, ""},
		{"two timers",
			"ID: 3\nsignal: 14/0000000000000000\nnotify: signal/pid.7\nClockID: 0\nID: 9\nsignal: 0/00007f0000001000\nnotify: none/pid.7\nClockID: 2\n",
			[]procTimer{{ID: 3, Signal: 14, Notify: sigevSignal, Target: 7}, {ID: 9, Value: 0x7f0000001000, Notify: sigevNone, Target: 7, Clock: 2}}, ""},
		{"thread notify", "ID: 1\nsignal: 34/0\nnotify: thread/pid.5\nClockID: 1\n",
			[]procTimer{{ID: 1, Signal: 34, Notify: sigevThread, Target: 5, Clock: 1}}, ""},
		{"field before ID", "signal: 14/0\n", nil, "before the first ID"},
		{"bad notify", "ID: 1\nnotify: bogus/pid.5\n", nil, "unknown kind"},
		{"bad target", "ID: 1\nnotify: signal/pgid.5\n", nil, "unknown target"},
		{"bad id", "ID: x\n", nil, "invalid syntax"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcTimers(tt.text)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestParseProcTimersReal creates a timer in the test process and finds it
// in /proc/self/timers as created.
func TestParseProcTimersReal(t *testing.T) {
	var sev [sigeventSize]byte
	abi.PutU64(sev[0:], 0xfeedface)
	abi.PutU32(sev[8:], sigRTMin+5)
	abi.PutU32(sev[12:], sigevNone)
	var id int32
	if _, _, e := unix.Syscall(unix.SYS_TIMER_CREATE, unix.CLOCK_BOOTTIME, uintptr(unsafe.Pointer(&sev[0])), uintptr(unsafe.Pointer(&id))); e != 0 {
		t.Fatalf("timer_create: %v", e)
	}
	defer unix.Syscall(unix.SYS_TIMER_DELETE, uintptr(id), 0, 0)
	b, err := os.ReadFile("/proc/self/timers")
	if err != nil {
		t.Skip(err)
	}
	timers, err := parseProcTimers(string(b))
	if err != nil {
		t.Fatal(err)
	}
	want := procTimer{ID: int(id), Signal: sigRTMin + 5, Value: 0xfeedface, Notify: sigevNone, Target: os.Getpid(), Clock: unix.CLOCK_BOOTTIME}
	for _, pt := range timers {
		if pt == want {
			return
		}
	}
	t.Fatalf("timer %+v not among %+v", want, timers)
}

// createTimer injects timer_create into a tracee and returns the id.
func createTimer(t *testing.T, c *injecttest.Tracee, clock int, notify, sig, tid int, value uint64) int {
	t.Helper()
	sev := make([]byte, sigeventSize)
	abi.PutU64(sev[0:], value)
	abi.PutU32(sev[8:], uint32(sig))
	abi.PutU32(sev[12:], uint32(notify))
	abi.PutU32(sev[16:], uint32(tid))
	addr, _ := c.Proc.ScratchAt(0, sigeventSize)
	if err := c.Proc.Write(addr, sev); err != nil {
		t.Fatal(err)
	}
	idAddr, _ := c.Proc.ScratchAt(sigeventSize, 4)
	if _, err := c.Thread.Call("timer_create", unix.SYS_TIMER_CREATE, uint64(clock), addr, idAddr); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if err := c.Proc.Read(idAddr, b); err != nil {
		t.Fatal(err)
	}
	return int(int32(le32(b)))
}

// TestPosixTimersRoundTrip creates timers with sparse ids in one child,
// records them and re-creates them in a second child: with
// PR_TIMER_CREATE_RESTORE_IDS, and in id order as on kernels without it.
func TestPosixTimersRoundTrip(t *testing.T) {
	injecttest.WithAndWithout(t, kernel.TimerRestoreIDs, posixTimersRoundTrip)
}

func posixTimersRoundTrip(t *testing.T) {
	tr := ptrace.NewTracer()
	defer tr.Close()
	a := injecttest.Start(t, tr)
	for i := 0; i < 3; i++ {
		createTimer(t, a, unix.CLOCK_MONOTONIC, sigevNone, 0, 0, 0)
	}
	for _, id := range []uint64{0, 2} {
		if _, err := a.Thread.Call("timer_delete", unix.SYS_TIMER_DELETE, id); err != nil {
			t.Fatal(err)
		}
	}
	tid := createTimer(t, a, unix.CLOCK_REALTIME, sigevSignal|sigevThreadID, sigRTMin+3, a.PID, 0xabc)
	its := make([]byte, abi.ItimerspecSize)
	abi.PutU64(its[0:], 5)   // interval 5 s
	abi.PutU64(its[16:], 90) // first expiry in 90 s
	addr, _ := a.Proc.ScratchAt(256, abi.ItimerspecSize)
	if err := a.Proc.Write(addr, its); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Thread.Call("timer_settime", unix.SYS_TIMER_SETTIME, uint64(tid), 0, addr, 0); err != nil {
		t.Fatal(err)
	}
	p := &image.Process{PID: a.PID, Threads: []image.Thread{{TID: a.PID}}}
	if err := dumpPosixTimers(a.Proc, a.PID, p); err != nil {
		t.Fatal(err)
	}
	if len(p.PosixTimers) != 2 {
		t.Fatalf("dumped %+v, want timers 1 and %d", p.PosixTimers, tid)
	}
	armed := p.PosixTimers[1]
	if armed.ID != tid || armed.TID != a.PID || armed.Signal != sigRTMin+3 || armed.Value != 0xabc ||
		armed.Notify != sigevSignal|sigevThreadID || armed.IntervalSec != 5 || armed.ValueSec < 88 || armed.ValueSec > 89 {
		t.Fatalf("dumped %+v", armed)
	}

	b := injecttest.Start(t, tr)
	q := &image.Process{PID: b.PID, Threads: []image.Thread{{TID: b.PID}}, PosixTimers: p.PosixTimers}
	q.PosixTimers[1].TID = b.PID
	r := restorerFor(tr, b, q)
	if err := r.restorePosixTimers(q); err != nil {
		t.Fatal(err)
	}
	back := &image.Process{PID: b.PID, Threads: q.Threads}
	if err := dumpPosixTimers(b.Proc, b.PID, back); err != nil {
		t.Fatal(err)
	}
	if len(back.PosixTimers) != 2 {
		t.Fatalf("restored %+v", back.PosixTimers)
	}
	for i, got := range back.PosixTimers {
		want := q.PosixTimers[i]
		got.ValueSec, want.ValueSec, got.ValueNsec, want.ValueNsec = 0, 0, 0, 0
		if got != want {
			t.Errorf("timer %d: restored %+v, want %+v", i, got, want)
		}
	}
	if v := back.PosixTimers[1].ValueSec; v < 87 || v > 89 {
		t.Errorf("restored timer has %d s left, want about 89", v)
	}
	// The prctl is switched off again: a plain timer_create picks an id.
	if id := createTimer(t, b, unix.CLOCK_MONOTONIC, sigevNone, 0, 0, 0); id == tid || id == 1 {
		t.Errorf("timer_create after the restore gave a taken id %d", id)
	}
}
