package image

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// The page runs of a process are kept out of its core file, in a binary
// file of fixed-size records: an incremental generation of a large job
// whose pages changed here and there has hundreds of thousands of runs,
// and decoding them as JSON took longer than the rest of the final
// checkpoint (a 4 GiB job, 5% of its pages changed: 22 MB of JSON, 0.7 s
// of the 1.3 s the job was stopped for at --kill).
//
// Layout: the 8-byte magic pageRunsMagic, the number of runs (u64), then
// per run Addr, Pages, Offset and Generation (u64 each), all little-endian.

// PageRunsName is the page-run file of the process with sandbox pid pid.
func PageRunsName(pid int) string { return "pageruns-" + strconv.Itoa(pid) + ".img" }

const (
	pageRunsMagic  = "CKPTRUN1"
	pageRunsHeader = 16
	pageRunSize    = 32
)

// WritePageRuns adds the page-run file name holding runs.
func (w *Writer) WritePageRuns(name string, runs []PageRun) error {
	d, err := w.Create(name)
	if err != nil {
		return err
	}
	err = encodePageRuns(d, runs)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("generation %d: write %s: %w", w.Gen, name, err)
	}
	return nil
}

func encodePageRuns(w io.Writer, runs []PageRun) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	var rec [pageRunSize]byte
	copy(rec[:], pageRunsMagic)
	binary.LittleEndian.PutUint64(rec[8:], uint64(len(runs)))
	if _, err := bw.Write(rec[:pageRunsHeader]); err != nil {
		return err
	}
	for _, r := range runs {
		if r.Generation < 0 {
			return fmt.Errorf("page run at %#x: generation %d", r.Addr, r.Generation)
		}
		binary.LittleEndian.PutUint64(rec[0:], r.Addr)
		binary.LittleEndian.PutUint64(rec[8:], r.Pages)
		binary.LittleEndian.PutUint64(rec[16:], r.Offset)
		binary.LittleEndian.PutUint64(rec[24:], uint64(r.Generation))
		if _, err := bw.Write(rec[:]); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// ReadPageRuns reads the page-run file name of the generation.
func (g *Generation) ReadPageRuns(name string) ([]PageRun, error) {
	f, err := g.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("generation %d: %s: %w", g.Gen, name, err)
	}
	runs, err := decodePageRuns(bufio.NewReaderSize(f, 1<<16), fi.Size())
	if err != nil {
		return nil, fmt.Errorf("generation %d: %s: %w", g.Gen, name, err)
	}
	return runs, nil
}

// decodePageRuns reads a page-run file of size bytes, refusing one whose
// header and size disagree before it allocates anything for its runs.
func decodePageRuns(r io.Reader, size int64) ([]PageRun, error) {
	var rec [pageRunSize]byte
	if _, err := io.ReadFull(r, rec[:pageRunsHeader]); err != nil {
		return nil, fmt.Errorf("header: %w", shortRead(err))
	}
	if string(rec[:8]) != pageRunsMagic {
		return nil, fmt.Errorf("not a page-run file (magic %q)", rec[:8])
	}
	n := binary.LittleEndian.Uint64(rec[8:])
	if n > uint64(size-pageRunsHeader)/pageRunSize || int64(n)*pageRunSize != size-pageRunsHeader {
		return nil, fmt.Errorf("says it holds %d runs, but is %d bytes long", n, size)
	}
	runs := make([]PageRun, n)
	for i := range runs {
		if _, err := io.ReadFull(r, rec[:]); err != nil {
			return nil, fmt.Errorf("run %d: %w", i, shortRead(err))
		}
		gen := binary.LittleEndian.Uint64(rec[24:])
		if gen > math.MaxInt32 {
			return nil, fmt.Errorf("run %d: generation %d", i, gen)
		}
		runs[i] = PageRun{
			Addr:       binary.LittleEndian.Uint64(rec[0:]),
			Pages:      binary.LittleEndian.Uint64(rec[8:]),
			Offset:     binary.LittleEndian.Uint64(rec[16:]),
			Generation: int(gen),
		}
	}
	return runs, nil
}

func shortRead(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ReadProcess reads the core file of ref and, where the generation keeps
// them apart, its page runs.
func (g *Generation) ReadProcess(ref ProcessRef) (*Process, error) {
	p := new(Process)
	if err := g.ReadJSON(ref.Core, p); err != nil {
		return nil, err
	}
	if ref.Runs == "" {
		return p, nil
	}
	if len(p.PageRuns) > 0 {
		return nil, fmt.Errorf("generation %d: %s holds page runs though they are in %s", g.Gen, ref.Core, ref.Runs)
	}
	runs, err := g.ReadPageRuns(ref.Runs)
	if err != nil {
		return nil, err
	}
	p.PageRuns = runs
	return p, nil
}

// WriteProcess adds the core file of p and, when it has page runs, its
// page-run file, and fills in ref's Core and Runs.
func (w *Writer) WriteProcess(p *Process, ref *ProcessRef) error {
	runs := p.PageRuns
	if runs != nil {
		ref.Runs = PageRunsName(p.PID)
		if err := w.WritePageRuns(ref.Runs, runs); err != nil {
			return err
		}
		p.PageRuns = nil
		defer func() { p.PageRuns = runs }()
	}
	ref.Core = CoreName(p.PID)
	return w.WriteJSON(ref.Core, p)
}
