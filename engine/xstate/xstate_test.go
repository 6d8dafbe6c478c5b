package xstate

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// Two layouts as real CPUs have them: an Intel server part with AVX-512
// and PKRU after it, and a CPU without AVX-512 whose PKRU follows AVX.
var (
	intelAVX512 = Layout{{2, 576, 256}, {5, 1088, 64}, {6, 1152, 512}, {7, 1664, 1024}, {9, 2688, 8}}
	noAVX512    = Layout{{2, 576, 256}, {9, 832, 8}}
)

// area makes an area of size bytes laid out as l with components bv in
// use, each filled with its own byte value.
func area(size int, l Layout, bv uint64) []byte {
	a := make([]byte, size)
	for i := range LegacySize {
		a[i] = byte(i)
	}
	binary.LittleEndian.PutUint64(a[headerBV:], bv)
	for _, c := range l {
		if bv&(1<<c.Index) != 0 {
			copy(a[c.Offset:], bytes.Repeat([]byte{byte(0x40 + c.Index)}, int(c.Size)))
		}
	}
	return a
}

func TestConvert(t *testing.T) {
	const fpSSE = 1<<0 | 1<<1
	tests := []struct {
		name     string
		src      []byte
		from     Layout
		size     int
		to       Layout
		wantErr  string
		wantComp []int // components to find at to's offsets
	}{
		{"AVX and PKRU to a CPU that places PKRU elsewhere", area(2696, intelAVX512, fpSSE|1<<2|1<<9), intelAVX512, 840, noAVX512, "", []int{2, 9}},
		{"to a CPU with more", area(840, noAVX512, fpSSE|1<<2|1<<9), noAVX512, 2696, intelAVX512, "", []int{2, 9}},
		{"AVX-512 registers in their initial state need no room", area(2696, intelAVX512, fpSSE|1<<2), intelAVX512, 840, noAVX512, "", []int{2}},
		{"AVX-512 registers in use", area(2696, intelAVX512, fpSSE|1<<2|1<<6), intelAVX512, 840, noAVX512, "AVX-512 ZMM_Hi256 state, which this CPU lacks", nil},
		{"in use but not in the recorded layout", area(840, noAVX512, fpSSE|1<<5), noAVX512, 2696, intelAVX512, "recorded layout lacks it", nil},
		{"component of another size", area(840, noAVX512, fpSSE|1<<9), noAVX512, 2696, Layout{{2, 576, 256}, {9, 2688, 4}}, "PKRU state is 4 bytes here, 8", nil},
		{"recorded component past the area", area(840, noAVX512, fpSSE), Layout{{2, 576, 512}}, 2696, intelAVX512, "outside an area of 840 bytes", nil},
		{"recorded component over the header", area(840, noAVX512, fpSSE), Layout{{2, 520, 8}}, 2696, intelAVX512, "outside", nil},
		{"component listed twice", area(840, noAVX512, fpSSE), Layout{{2, 576, 256}, {2, 576, 256}}, 2696, intelAVX512, "twice", nil},
		{"x87 as a component", area(840, noAVX512, fpSSE), Layout{{0, 576, 8}}, 2696, intelAVX512, "not an extended", nil},
		{"short area", make([]byte, 100), noAVX512, 2696, intelAVX512, "shorter than its header", nil},
		{"area here too short", area(840, noAVX512, fpSSE), noAVX512, 200, intelAVX512, "here: shorter", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Convert(tt.src, tt.from, tt.size, tt.to)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Convert: %v; want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.size {
				t.Fatalf("len = %d, want %d", len(got), tt.size)
			}
			if !bytes.Equal(got[:swReserved], tt.src[:swReserved]) {
				t.Error("legacy region not kept")
			}
			bv, _ := InUse(got)
			want, _ := InUse(tt.src)
			if bv != want {
				t.Errorf("XSTATE_BV = %#x, want %#x", bv, want)
			}
			if xcomp := binary.LittleEndian.Uint64(got[headerBV+8:]); xcomp != 0 {
				t.Errorf("XCOMP_BV = %#x, want 0 (standard format)", xcomp)
			}
			for _, i := range tt.wantComp {
				c, _ := tt.to.find(i)
				if want := bytes.Repeat([]byte{byte(0x40 + i)}, int(c.Size)); !bytes.Equal(got[c.Offset:c.Offset+c.Size], want) {
					t.Errorf("%s not moved to offset %d", Name(i), c.Offset)
				}
			}
		})
	}
}

// TestLocalLayout checks the layout CPUID gives against the sizes CPUID
// itself reports for the whole area.
func TestLocalLayout(t *testing.T) {
	l := Local()
	if len(l) == 0 {
		t.Skip("this CPU has no XSAVE components beyond SSE")
	}
	_, _, maxAll, _ := cpuid(0xd, 0)
	if err := l.Check(int(maxAll)); err != nil {
		t.Fatalf("Local() = %v: %v", l, err)
	}
	if c, ok := l.find(2); ok && (c.Offset != 576 || c.Size != 256) {
		t.Errorf("AVX at %d, %d bytes; every CPU puts it at 576, 256 bytes", c.Offset, c.Size)
	}
	en := Enabled()
	if en&3 != 3 {
		t.Errorf("XCR0 %#x lacks x87 or SSE", en)
	}
	for _, c := range l {
		if en&(1<<c.Index) == 0 {
			t.Errorf("%s is in the layout but not enabled (XCR0 %#x)", Name(c.Index), en)
		}
	}
	if _, size, _, _ := cpuid(0xd, 0); len(l) > 0 {
		last := l[len(l)-1]
		for _, c := range l {
			if c.Offset > last.Offset {
				last = c
			}
		}
		if last.Offset+last.Size > size {
			t.Errorf("%s ends at %d, past the enabled area of %d bytes", Name(last.Index), last.Offset+last.Size, size)
		}
	}
	t.Logf("XCR0 %#x (%v), layout %v, whole area %d bytes", en, Names(en), l, maxAll)
}
