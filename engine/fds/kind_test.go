package fds

import (
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

// fakeInfo is the stat of a path target.
type fakeInfo fs.FileMode

func (m fakeInfo) Name() string       { return "f" }
func (m fakeInfo) Size() int64        { return 0 }
func (m fakeInfo) Mode() fs.FileMode  { return fs.FileMode(m) }
func (m fakeInfo) ModTime() time.Time { return time.Time{} }
func (m fakeInfo) IsDir() bool        { return fs.FileMode(m).IsDir() }
func (m fakeInfo) Sys() any           { return nil }

// TestClaim checks which kind each /proc link (and file type) goes to, and
// what a descriptor no kind claims fails with.
func TestClaim(t *testing.T) {
	tests := []struct {
		target string
		mode   fs.FileMode // for path targets
		want   kind        // nil: refused
		err    string
	}{
		{"/dev/null", fs.ModeDevice | fs.ModeCharDevice, deviceKind{}, ""},
		{"/dev/pts/0", fs.ModeDevice | fs.ModeCharDevice, ptyKind{}, ""},
		{"/dev/ptmx", fs.ModeDevice | fs.ModeCharDevice, ptyKind{}, ""},
		{"/dev/tty", fs.ModeDevice | fs.ModeCharDevice, nil, "/dev/tty (Dc---------): this kind of file is not supported yet"},
		{"anon_inode:[eventfd]", 0, eventfdKind{}, ""},
		{"anon_inode:[eventpoll]", 0, epollKind{}, ""},
		{"anon_inode:[timerfd]", 0, timerfdKind{}, ""},
		{"anon_inode:[signalfd]", 0, signalfdKind{}, ""},
		{"anon_inode:inotify", 0, inotifyKind{}, ""},
		{"anon_inode:[userfaultfd]", 0, nil, "[userfaultfd]: this kind of file descriptor is not supported yet"},
		{"pipe:[1234]", 0, pipeKind{}, ""},
		{"socket:[99]", 0, unixKind{}, ""},
		{"/memfd:x (deleted)", 0, contentsKind{}, ""},
		{"/tmp/gone (deleted)", 0, contentsKind{}, ""},
		{"/tmp/fifo", fs.ModeNamedPipe, fifoKind{}, ""},
		{"/tmp/file", 0, regularKind{}, ""},
		{"/tmp", fs.ModeDir, regularKind{}, ""},
		{"/tmp/sock", fs.ModeSocket, nil, "this kind of file is not supported yet"},
		{"net:[4026531840]", 0, nil, "net:[4026531840]: this kind of file descriptor is not supported yet"},
	}
	for _, tt := range tests {
		c := &dumpCtx{Dumper: &Dumper{}, fd: &proc.FD{Target: tt.target}}
		if strings.HasPrefix(tt.target, "/") {
			c.st = fakeInfo(tt.mode)
		}
		k, err := claim(c)
		if reflect.TypeOf(k) != reflect.TypeOf(tt.want) {
			t.Errorf("%s: claimed by %T, want %T", tt.target, k, tt.want)
		}
		if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: %v, want an error saying %q", tt.target, err, tt.err)
		}
	}
}

// TestEveryRecordRestored checks that each descriptor kind an image may
// hold has exactly one kind to restore it.
func TestEveryRecordRestored(t *testing.T) {
	for _, r := range []image.FDKind{image.FDFile, image.FDDevice, image.FDStdio, image.FDEventfd, image.FDEpoll,
		image.FDPipe, image.FDFifo, image.FDUnix, image.FDTimerfd, image.FDSignalfd, image.FDInotify, image.FDMemfd, image.FDDeleted,
		image.FDInet, image.FDPty} {
		if byRecord[r] == nil {
			t.Errorf("no kind restores %s descriptors", r)
		}
	}
	if len(byRecord) != 15 {
		t.Errorf("%d image kinds are restored, the test knows 15: add the new one above", len(byRecord))
	}
}
