package fds

import (
	"fmt"
	"strings"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// kind is one kind of file descriptor, dumped and restored.
type kind interface {
	// records are the image kinds this kind's dump writes, which its
	// restore re-creates.
	records() []image.FDKind
	// claims reports whether the descriptor being dumped is of this kind.
	claims(c *dumpCtx) bool
	// dump records the descriptor in out, whose number, flags, offset and
	// open file description are already set.
	dump(c *dumpCtx, out *image.FD) error
	// restore re-creates f in the process on its recorded number, with
	// its recorded flags.
	restore(c *restoreCtx, f *image.FD) error
}

// kinds are asked in this order: the supervisor's own streams first (they
// are told by the open file, not the link), then exact names before the
// prefixes that would also match them, and regular files last.
var kinds = []kind{
	stdioKind{},
	deviceKind{},
	eventfdKind{},
	epollKind{},
	timerfdKind{},
	signalfdKind{},
	inotifyKind{},
	pipeKind{},
	ptyKind{},
	unixKind{},
	contentsKind{},
	fifoKind{},
	regularKind{},
}

// byRecord finds the kind that restores image kind k.
var byRecord = func() map[image.FDKind]kind {
	m := map[image.FDKind]kind{}
	for _, k := range kinds {
		for _, r := range k.records() {
			if m[r] != nil {
				panic(fmt.Sprintf("fds: two kinds restore %s descriptors", r))
			}
			m[r] = k
		}
	}
	return m
}()

// claim finds the kind of the descriptor being dumped.
func claim(c *dumpCtx) (kind, error) {
	for _, k := range kinds {
		if k.claims(c) {
			return k, nil
		}
	}
	t := c.fd.Target
	switch {
	case strings.HasPrefix(t, "anon_inode:"):
		return nil, fmt.Errorf("%s: this kind of file descriptor is not supported yet", strings.TrimPrefix(t, "anon_inode:"))
	case c.st != nil:
		return nil, fmt.Errorf("%s (%s): this kind of file is not supported yet", t, c.st.Mode().Type())
	}
	return nil, fmt.Errorf("%s: this kind of file descriptor is not supported yet", t)
}
