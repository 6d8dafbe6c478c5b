package xstate

import (
	"encoding/binary"
	"fmt"
	"sort"
	"sync"
)

const (
	// LegacySize is the x87 and SSE region every format starts with;
	// HeaderSize the XSAVE header after it.
	LegacySize = 512
	HeaderSize = 64
	// swReserved is where the kernel writes its own description of the
	// area into the legacy region; it is the kernel's, not the thread's.
	swReserved = 464
	// headerBV is the offset of XSTATE_BV, the components in use.
	headerBV = LegacySize
	// MaxComponent bounds the component numbers XSTATE_BV can name.
	MaxComponent = 63
	// firstExtended is the first component outside the legacy region
	// (0 is x87, 1 is SSE).
	firstExtended = 2
)

// Component is where one state component lies in a standard-format area.
type Component struct {
	Index  int    `json:"index"`
	Offset uint32 `json:"offset"`
	Size   uint32 `json:"size"`
}

// Layout lists a CPU's user state components beyond SSE, by Index.
type Layout []Component

// find returns the component numbered i.
func (l Layout) find(i int) (Component, bool) {
	for _, c := range l {
		if c.Index == i {
			return c, true
		}
	}
	return Component{}, false
}

// Equal says whether two layouts place every component alike.
func (l Layout) Equal(o Layout) bool {
	if len(l) != len(o) {
		return false
	}
	for i := range l {
		if l[i] != o[i] {
			return false
		}
	}
	return true
}

// names are the components a message may name.
var names = map[int]string{
	2: "AVX", 3: "MPX bounds", 4: "MPX config", 5: "AVX-512 opmask", 6: "AVX-512 ZMM_Hi256",
	7: "AVX-512 Hi16_ZMM", 9: "PKRU", 11: "CET user", 17: "AMX tile config", 18: "AMX tile data", 19: "APX",
}

// Name is a component's name for messages.
func Name(i int) string {
	if n, ok := names[i]; ok {
		return n
	}
	return fmt.Sprintf("component %d", i)
}

var (
	localOnce    sync.Once
	localLayout  Layout
	localEnabled uint64
)

// Enabled is XCR0: the state components the kernel enabled on this CPU,
// which every XSAVE a program runs may write. 0 on a CPU without XSAVE.
func Enabled() uint64 {
	localOnce.Do(readLocal)
	return localEnabled
}

// Local is the layout of the user state components beyond SSE the kernel
// enabled on this CPU (XCR0), in Index order. It is empty on a CPU
// without XSAVE.
func Local() Layout {
	localOnce.Do(readLocal)
	return localLayout
}

func readLocal() {
	if max, _, _, _ := cpuid(0, 0); max < 0xd {
		return
	}
	// XSAVE, and the kernel turned it on (OSXSAVE).
	if _, _, ecx, _ := cpuid(1, 0); ecx&(1<<26) == 0 || ecx&(1<<27) == 0 {
		return
	}
	lo, hi := xgetbv0()
	localEnabled = uint64(hi)<<32 | uint64(lo)
	for i := firstExtended; i <= MaxComponent; i++ {
		if localEnabled&(1<<i) == 0 {
			continue
		}
		size, off, ecx, _ := cpuid(0xd, uint32(i))
		// Supervisor components (ECX bit 0) are not in user areas.
		if size == 0 || ecx&1 != 0 {
			continue
		}
		localLayout = append(localLayout, Component{Index: i, Offset: off, Size: size})
	}
	sort.Slice(localLayout, func(a, b int) bool { return localLayout[a].Index < localLayout[b].Index })
}

// Names lists the components of mask beyond SSE, for messages.
func Names(mask uint64) []string {
	var out []string
	for i := firstExtended; i <= MaxComponent; i++ {
		if mask&(1<<i) != 0 {
			out = append(out, Name(i))
		}
	}
	return out
}

// Check refuses a layout that places a component outside an area of at
// most max bytes, over the legacy region or header, or twice.
func (l Layout) Check(max int) error {
	seen := map[int]bool{}
	for _, c := range l {
		switch {
		case c.Index < firstExtended || c.Index > MaxComponent:
			return fmt.Errorf("XSAVE component %d: not an extended component", c.Index)
		case seen[c.Index]:
			return fmt.Errorf("XSAVE component %d listed twice", c.Index)
		case c.Size == 0 || c.Offset < LegacySize+HeaderSize || uint64(c.Offset)+uint64(c.Size) > uint64(max):
			return fmt.Errorf("XSAVE component %d at %d, %d bytes: outside an area of %d bytes", c.Index, c.Offset, c.Size, max)
		}
		seen[c.Index] = true
	}
	return nil
}

// InUse returns XSTATE_BV of a standard-format area: the components the
// thread had out of their initial state.
func InUse(area []byte) (uint64, error) {
	if len(area) < LegacySize+HeaderSize {
		return 0, fmt.Errorf("XSAVE area of %d bytes: shorter than its header", len(area))
	}
	return binary.LittleEndian.Uint64(area[headerBV:]), nil
}

// Movable checks that every component src (laid out as from describes)
// has in use has a place of the same size in to; components in their
// initial state need no room.
func Movable(src []byte, from, to Layout) error {
	bv, err := InUse(src)
	if err != nil {
		return err
	}
	for i := firstExtended; i <= MaxComponent; i++ {
		if bv&(1<<i) == 0 {
			continue
		}
		s, ok := from.find(i)
		if !ok {
			return fmt.Errorf("XSAVE component %d (%s) is in use but the recorded layout lacks it", i, Name(i))
		}
		d, ok := to.find(i)
		if !ok {
			return fmt.Errorf("the job's threads use %s state, which this CPU lacks", Name(i))
		}
		if s.Size != d.Size {
			return fmt.Errorf("%s state is %d bytes here, %d where the job was checkpointed", Name(i), d.Size, s.Size)
		}
	}
	return nil
}

// Convert rewrites src, an area laid out as from describes, into an area
// of size bytes laid out as to describes. It fails as Movable does.
func Convert(src []byte, from Layout, size int, to Layout) ([]byte, error) {
	if size < LegacySize+HeaderSize {
		return nil, fmt.Errorf("XSAVE area of %d bytes here: shorter than its header", size)
	}
	if len(src) >= LegacySize+HeaderSize {
		if err := from.Check(len(src)); err != nil {
			return nil, fmt.Errorf("the recorded layout: %w", err)
		}
	}
	if err := to.Check(size); err != nil {
		return nil, fmt.Errorf("this CPU's layout: %w", err)
	}
	if err := Movable(src, from, to); err != nil {
		return nil, err
	}
	bv, _ := InUse(src)
	dst := make([]byte, size)
	copy(dst, src[:swReserved])
	binary.LittleEndian.PutUint64(dst[headerBV:], bv)
	for i := firstExtended; i <= MaxComponent; i++ {
		if bv&(1<<i) != 0 {
			s, _ := from.find(i)
			d, _ := to.find(i)
			copy(dst[d.Offset:d.Offset+d.Size], src[s.Offset:s.Offset+s.Size])
		}
	}
	return dst, nil
}
