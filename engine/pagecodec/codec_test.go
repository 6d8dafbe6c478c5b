package pagecodec

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"
)

const page = 4096

// pageData makes n pages: repetitive text, random bytes, or both alternating
// block by block.
func pageData(kind string, n int) []byte {
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	b := make([]byte, n*page)
	for i := range b {
		switch {
		case kind == "random", kind == "mixed" && (i/BlockSize)%2 == 1:
			b[i] = byte(rng.Uint32())
		default:
			b[i] = "step 000042 sum 0x5eed\n"[i%23]
		}
	}
	return b
}

func encode(t *testing.T, data []byte, writes int) []byte {
	t.Helper()
	var out bytes.Buffer
	e, err := NewEncoder(&out)
	if err != nil {
		t.Fatal(err)
	}
	// Writes of uneven sizes, as a dumper's batches after zero pages and
	// unchanged pages were left out.
	rest := data
	for i := 0; len(rest) > 0; i++ {
		n := min(len(rest), (len(data)/writes+1+i*page)&^(page-1)+page)
		if _, err := e.WriteThrough(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if e.DataSize() != uint64(len(data)) {
		t.Fatalf("DataSize %d, wrote %d", e.DataSize(), len(data))
	}
	return out.Bytes()
}

func decodeAll(t *testing.T, file []byte, dataSize uint64) ([]byte, *Index) {
	t.Helper()
	x, err := ReadIndex(bytes.NewReader(file), int64(len(file)), dataSize)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var got []byte
	for i := range x.Blocks() {
		off, n, raw := x.Frame(i)
		block := make([]byte, x.BlockLen(i))
		frame := file[off : off+n]
		if raw {
			copy(block, frame)
		} else if err := d.Decode(block, frame); err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		got = append(got, block...)
	}
	return got, x
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		kind   string
		pages  int
		writes int
		// smaller: the file must be smaller than the data.
		smaller bool
	}{
		{"text", 0, 1, false},
		{"text", 1, 1, true},
		{"text", BlockSize / page, 1, true},
		{"text", BlockSize/page + 1, 3, true},
		{"text", 7 * BlockSize / page / 2, 5, true},
		{"random", 3 * BlockSize / page, 2, false},
		{"mixed", 4*BlockSize/page + 3, 7, true},
	} {
		data := pageData(tc.kind, tc.pages)
		file := encode(t, data, tc.writes)
		got, x := decodeAll(t, file, uint64(len(data)))
		if !bytes.Equal(got, data) {
			t.Errorf("%s, %d pages: decoded data differs", tc.kind, tc.pages)
		}
		if tc.smaller && len(file) >= len(data) {
			t.Errorf("%s, %d pages: %d bytes encoded to %d", tc.kind, tc.pages, len(data), len(file))
		}
		if tc.kind == "random" {
			// Incompressible blocks are stored as they are, not grown.
			for i := range x.Blocks() {
				if _, n, raw := x.Frame(i); !raw || n != BlockSize {
					t.Errorf("random block %d: raw %v, %d bytes", i, raw, n)
				}
			}
		}
	}
}

func TestDamagedIndex(t *testing.T) {
	data := pageData("mixed", 2*BlockSize/page+5)
	good := encode(t, data, 2)
	tail := len(good) - trailerSize
	for _, tc := range []struct {
		name     string
		damage   func(b []byte) []byte
		dataSize uint64
		want     string
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }, 0, "no index"},
		{"too short", func(b []byte) []byte { return b[:10] }, 0, "has no index"},
		{"other data size", func(b []byte) []byte { return b }, uint64(len(data)) + page, "the manifest says"},
		{"frame length", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[tail-4*2:], binary.LittleEndian.Uint32(b[tail-4*2:])+1)
			return b
		}, 0, "stored as"},
		{"compressed frame length", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[tail-4:], binary.LittleEndian.Uint32(b[tail-4:])+1)
			return b
		}, 0, "add up to"},
		{"block count", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[tail+12:], 9); return b }, 0, "9 blocks"},
		{"index offset", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[tail+24:], 1<<63); return b }, 0, "frames end at"},
	} {
		b := tc.damage(bytes.Clone(good))
		size := tc.dataSize
		if size == 0 {
			size = uint64(len(data))
		}
		_, err := ReadIndex(bytes.NewReader(b), int64(len(b)), size)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

func TestDecodeRefusesWrongSize(t *testing.T) {
	data := pageData("text", BlockSize/page)
	file := encode(t, data, 1)
	x, err := ReadIndex(bytes.NewReader(file), int64(len(file)), uint64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	off, n, _ := x.Frame(0)
	d, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Decode(make([]byte, BlockSize-page), file[off:off+n]); err == nil {
		t.Error("a block decoded into a buffer smaller than its data")
	}
	if err := d.Decode(make([]byte, BlockSize+page), file[off:off+n]); err == nil {
		t.Error("a block decoded into a buffer larger than its data")
	}
}
