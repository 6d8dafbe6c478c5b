package memory

import "golang.org/x/sys/unix"

// readEach reads the pending ranges of a running process one at a time,
// after a read of all of them failed: the process unmapped or shrank one
// of them meanwhile. Those that still fail are left out (skip); a pre-copy
// only copies ahead what the dump of the stopped process will check.
func (d *Dumper) readEach(buf []byte) {
	pos := 0
	for i := range d.pending {
		r := &d.pending[i]
		if r.clean {
			continue
		}
		if !r.viaMem {
			local := []unix.Iovec{{Base: &buf[pos], Len: uint64(r.len)}}
			remote := []unix.RemoteIovec{{Base: uintptr(r.addr), Len: r.len}}
			if got, err := unix.ProcessVMReadv(d.pid, local, remote, 0); err != nil || got != r.len {
				r.skip = true
			}
		}
		pos += r.len
	}
}
