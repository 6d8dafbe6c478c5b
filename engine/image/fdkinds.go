package image

import (
	"strings"

	"golang.org/x/sys/unix"
)

// Descriptor kinds whose state lives in the kernel object itself (timerfd,
// signalfd, inotify) or in the file's contents (memfd, deleted files).
const (
	FDTimerfd  FDKind = "timerfd"  // timerfd with its clock, settings and unread expirations
	FDSignalfd FDKind = "signalfd" // signalfd with its signal mask
	FDInotify  FDKind = "inotify"  // inotify instance with its watches
	FDMemfd    FDKind = "memfd"    // memfd_create file, contents saved in the image
	FDDeleted  FDKind = "deleted"  // regular file deleted while open, contents saved; restored as a memfd
)

// AnonFD is the state of a timerfd, signalfd or inotify descriptor; the
// field matching the descriptor's kind is set.
type AnonFD struct {
	Timerfd  *Timerfd       `json:"timerfd,omitempty"`
	Signalfd *Signalfd      `json:"signalfd,omitempty"`
	Inotify  []InotifyWatch `json:"inotify,omitempty"`
}

// Timerfd is a timerfd as fdinfo shows it. Value is the time left until
// the next expiration (zero: disarmed), Ticks the expirations not yet read.
type Timerfd struct {
	Clock        int    `json:"clock"`
	Ticks        uint64 `json:"ticks"`
	SettimeFlags int    `json:"settime_flags"` // TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET
	ValueSec     int64  `json:"value_sec"`
	ValueNsec    int64  `json:"value_nsec"`
	IntervalSec  int64  `json:"interval_sec"`
	IntervalNsec int64  `json:"interval_nsec"`
}

// Signalfd is a signalfd's set of accepted signals (bit n-1 for signal n).
type Signalfd struct {
	Mask uint64 `json:"mask"`
}

// InotifyWatch is one watch of an inotify instance. Path names the watched
// inode (Dev, Ino: st_dev and st_ino as stat reports them) at checkpoint
// time; Handle is its file handle (name_to_handle_at) of type HandleType.
type InotifyWatch struct {
	WD         int    `json:"wd"`
	Mask       uint32 `json:"mask"`
	Dev        uint64 `json:"dev"`
	Ino        uint64 `json:"ino"`
	Path       string `json:"path"`
	HandleType int32  `json:"handle_type"`
	Handle     []byte `json:"handle,omitempty"`
}

// FileContents describes a file whose data is stored in the image because
// no path leads to it any more (memfd, deleted file). Data is the data file
// of the generation holding the extents back to back; Extents are the
// ranges holding data, in order (holes are not stored).
type FileContents struct {
	Name  string `json:"name"` // memfd name, or the deleted file's path
	Data  string `json:"data"`
	Size  int64  `json:"size"`
	Mode  uint32 `json:"mode"`  // permission bits
	Seals int    `json:"seals"` // F_GET_SEALS
	// Shmem names the file as VMA.Shmem does (device:inode), so that a
	// memfd both open and mapped is restored as one file.
	Shmem   string   `json:"shmem,omitempty"`
	Extents []Extent `json:"extents,omitempty"`
}

// Extent is a range of a file that holds data.
type Extent struct {
	Off int64 `json:"off"`
	Len int64 `json:"len"`
}

// PosixTimer is one timer_create timer. Notify is sigev_notify
// (SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD, with SIGEV_THREAD_ID added when
// a thread is targeted, then TID is its tid); Value is sigev_value. Value*
// is the time left until the next expiration (zero: disarmed), Interval*
// the period. Overrun is timer_getoverrun at checkpoint time, which a
// restore cannot set.
type PosixTimer struct {
	ID           int    `json:"id"`
	Clock        int    `json:"clock"`
	Notify       int    `json:"notify"`
	Signal       int    `json:"signal"`
	Value        uint64 `json:"value"`
	TID          int    `json:"tid,omitempty"`
	ValueSec     int64  `json:"value_sec"`
	ValueNsec    int64  `json:"value_nsec"`
	IntervalSec  int64  `json:"interval_sec"`
	IntervalNsec int64  `json:"interval_nsec"`
	Overrun      int    `json:"overrun,omitempty"`
}

// Writable reports whether the descriptor was open for writing.
func (f *FD) Writable() bool {
	acc := f.Flags & unix.O_ACCMODE
	return acc == unix.O_WRONLY || acc == unix.O_RDWR
}

// KindName is the descriptor's kind. Images written before every
// descriptor carried its kind are told by the state they hold.
func (f *FD) KindName() FDKind {
	switch {
	case f.Kind != "":
		return f.Kind
	case f.Anon != nil && f.Anon.Timerfd != nil:
		return FDTimerfd
	case f.Anon != nil && f.Anon.Signalfd != nil:
		return FDSignalfd
	case f.Anon != nil:
		return FDInotify
	case f.Contents != nil && strings.HasPrefix(f.Contents.Name, "/"):
		return FDDeleted
	case f.Contents != nil:
		return FDMemfd
	case f.Unix != nil:
		return FDUnix
	case f.Inet != nil:
		return FDInet
	case f.Pty != nil:
		return FDPty
	case f.Pipe != nil:
		return FDPipe
	}
	return "unknown"
}
