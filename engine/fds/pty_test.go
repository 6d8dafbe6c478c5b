package fds

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject/injecttest"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// openTestPty opens a pseudo-terminal with echo off and a window size.
func openTestPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Lflag &^= unix.ECHO
	if err := unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(m.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 132}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// TestPtyRoundTrip restores a pseudo-terminal whose both ends the child
// holds: a new pair with the same settings, which carries data from the
// slave to the master.
func TestPtyRoundTrip(t *testing.T) {
	m, s := openTestPty(t)
	tp := roundTrip(t, m, s)
	tp.same(t)
	if !tp.after[0].Pty.Master || tp.after[1].Pty.Master || tp.after[0].Pty.Index != tp.after[1].Pty.Index {
		t.Fatalf("restored ends %+v %+v: want the master and the slave of one terminal", tp.after[0].Pty, tp.after[1].Pty)
	}
	if tp.before[0].Pty.Termios.Lflag&unix.ECHO != 0 || tp.before[0].Pty.Winsize[1] != 132 {
		t.Fatalf("settings not recorded: %+v", tp.before[0].Pty)
	}
	master, err := tp.b.Proc.PullFD(3)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(master)
	slave, err := tp.b.Proc.PullFD(4)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(slave)
	if _, err := unix.Write(slave, []byte("rank output\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := unix.Read(master, buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "rank output") {
		t.Fatalf("restored terminal carried %q, %v", buf[:n], err)
	}
}

// TestPtyRawQueues: on a raw terminal, what waits at each end is taken
// without losing it for the job and is waiting again after the restore.
func TestPtyRawQueues(t *testing.T) {
	m, s := openTestPty(t)
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	// cfmakeraw
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("rank output\n"))
	m.Write([]byte("to the rank\n"))
	tp := roundTrip(t, m, s)
	if got := string(tp.before[0].Pty.Queue); got != "rank output\n" {
		t.Errorf("master's queue recorded as %q", got)
	}
	if got := string(tp.before[1].Pty.Queue); got != "to the rank\n" {
		t.Errorf("slave's queue recorded as %q", got)
	}
	read := func(fd int, want string) {
		t.Helper()
		buf := make([]byte, 64)
		n, err := unix.Read(fd, buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("read %q, %v, want %q", buf[:n], err, want)
		}
	}
	// Still there for the job that was checkpointed...
	read(int(m.Fd()), "rank output\n")
	read(int(s.Fd()), "to the rank\n")
	// ... and for the restored one.
	master, err := tp.b.Proc.PullFD(3)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(master)
	slave, err := tp.b.Proc.PullFD(4)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(slave)
	read(master, "rank output\n")
	read(slave, "to the rank\n")
}

// TestPtyRefused: a terminal whose master is outside the job, and one
// with output waiting, fail the checkpoint saying so.
func TestPtyRefused(t *testing.T) {
	tests := []struct {
		name  string
		files func(m, s *os.File) []*os.File
		err   string
	}{
		{"slave only", func(m, s *os.File) []*os.File { return []*os.File{s} }, "its other end (the master) is outside the job"},
		{"output waiting on a cooked terminal", func(m, s *os.File) []*os.File {
			s.Write([]byte("unread"))
			return []*os.File{m, s}
		}, "6 bytes of the terminal's output (with OPOST) wait to be read: not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, s := openTestPty(t)
			err := dumpOnly(t, tt.files(m, s)...)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("dump: %v, want an error saying %q", err, tt.err)
			}
		})
	}
}

// dumpOnly dumps a traced child given files and returns the checkpoint's
// error.
func dumpOnly(t *testing.T, files ...*os.File) error {
	t.Helper()
	tr := ptrace.NewTracer()
	t.Cleanup(tr.Close)
	tp := injecttest.Start(t, tr, files...)
	img := &image.Process{PID: tp.PID, Cwd: "/"}
	d := NewDumper(DumpOptions{Writer: newWriter(t)})
	defer d.Close()
	if err := d.Dump(tp.Proc, img); err != nil {
		return err
	}
	return d.CheckPeers([]*image.Process{img})
}
