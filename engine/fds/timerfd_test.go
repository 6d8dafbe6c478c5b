package fds

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

func TestParseTimerfdInfo(t *testing.T) {
	good := []string{"clockid: 1", "ticks: 3", "settime flags: 03", "it_value: (4, 999640095)", "it_interval: (1, 5)"}
	got, err := parseTimerfdInfo(good)
	if err != nil {
		t.Fatal(err)
	}
	want := image.Timerfd{Clock: 1, Ticks: 3, SettimeFlags: 3, ValueSec: 4, ValueNsec: 999640095, IntervalSec: 1, IntervalNsec: 5}
	if *got != want {
		t.Fatalf("got %+v, want %+v", *got, want)
	}
	for _, bad := range [][]string{good[:4], {"clockid: x", "ticks: 0", "settime flags: 0", "it_value: (0, 0)", "it_interval: (0, 0)"},
		{"clockid: 1", "ticks: 0", "settime flags: 0", "it_value: 0 0", "it_interval: (0, 0)"}} {
		if _, err := parseTimerfdInfo(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestTimerfdRoundTrip restores a fired timerfd with its unread
// expiration and an armed periodic one, non-blocking, with the time it
// had left.
func TestTimerfdRoundTrip(t *testing.T) {
	fired, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.TimerfdSettime(fired, 0, &unix.ItimerSpec{Value: unix.Timespec{Nsec: 1}}, nil); err != nil {
		t.Fatal(err)
	}
	periodic, err := unix.TimerfdCreate(unix.CLOCK_BOOTTIME, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.TimerfdSettime(periodic, 0, &unix.ItimerSpec{Value: unix.Timespec{Sec: 100}, Interval: unix.Timespec{Sec: 2, Nsec: 500}}, nil); err != nil {
		t.Fatal(err)
	}
	files := []*os.File{os.NewFile(uintptr(fired), "fired"), os.NewFile(uintptr(periodic), "periodic")}
	for _, f := range files {
		defer f.Close()
	}
	tp := roundTrip(t, files...)
	if got := tp.before[0].Anon.Timerfd.Ticks; got != 1 {
		t.Errorf("fired timerfd: %d ticks, want 1", got)
	}
	for i := range tp.before {
		before, after := tp.before[i], tp.after[i]
		if after.Kind != image.FDTimerfd || after.Flags != before.Flags {
			t.Fatalf("fd %d restored as %s flags %#o, want timerfd flags %#o", before.Num, after.Kind, after.Flags, before.Flags)
		}
		want, have := *before.Anon.Timerfd, *after.Anon.Timerfd
		if have.ValueSec > want.ValueSec || want.ValueSec-have.ValueSec > 1 {
			t.Errorf("timerfd %d: %d s left after the restore, %d before", i, have.ValueSec, want.ValueSec)
		}
		want.ValueSec, want.ValueNsec, have.ValueSec, have.ValueNsec = 0, 0, 0, 0
		if have != want {
			t.Errorf("timerfd %d: restored %+v, want %+v", i, have, want)
		}
	}
}
