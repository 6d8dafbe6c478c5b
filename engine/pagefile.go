package engine

import (
	"fmt"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/memory"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/pagecodec"
)

// pageFile is one process's page file being written: the page data as it
// is, or compressed (CheckpointOptions.Compress) on its way to the file.
type pageFile struct {
	file *image.DataFile
	enc  *pagecodec.Encoder // nil: stored as it is
	// compressed says the page data went through enc.
	compressed bool
}

// createPageFile starts the page file of the process with sandbox pid pid.
func createPageFile(opts CheckpointOptions, pid int) (*pageFile, error) {
	switch opts.Compress {
	case "":
		f, err := opts.Writer.CreateDirect(image.PagesName(pid))
		if err != nil {
			return nil, err
		}
		return &pageFile{file: f}, nil
	case image.CodecZstd:
		// Written with O_DIRECT from the encoder's aligned buffer,
		// not through the file's own (16 MiB more).
		f, err := opts.Writer.CreateDirect(image.PagesName(pid))
		if err != nil {
			return nil, err
		}
		enc, err := pagecodec.NewEncoder(writeThrough{f})
		if err != nil {
			opts.Writer.Drop(f)
			return nil, err
		}
		return &pageFile{file: f, enc: enc, compressed: true}, nil
	}
	return nil, fmt.Errorf("page data compression %q: this ckpt-apptainer compresses with %q or not at all", opts.Compress, image.CodecZstd)
}

// sink is where a dumper writes the page data.
func (pf *pageFile) sink() memory.Sink {
	if pf.enc != nil {
		return pf.enc
	}
	return pf.file
}

// Close ends the page data and closes the file, recording its encoding for
// the manifest.
func (pf *pageFile) Close() error {
	if pf.enc != nil {
		err := pf.enc.Close()
		pf.file.SetEncoding(image.CodecZstd, int64(pf.enc.DataSize()))
		pf.enc = nil
		if err != nil {
			pf.file.Close()
			return err
		}
	}
	return pf.file.Close()
}

// stored is how many bytes of compressed page data the file holds (0 when
// not compressed).
func (pf *pageFile) stored() int64 {
	if !pf.compressed {
		return 0
	}
	return pf.file.Written()
}

// drop removes the page file from the generation.
func (pf *pageFile) drop(w *image.Writer) {
	if pf.enc != nil {
		pf.enc.Discard()
		pf.enc = nil
	}
	w.Drop(pf.file)
}

// writeThrough writes to a data file with WriteThrough.
type writeThrough struct{ f *image.DataFile }

func (w writeThrough) Write(p []byte) (int, error) { return w.f.WriteThrough(p) }
