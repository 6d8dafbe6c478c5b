package memory

// Shared records which pages of each shared memory object are in the
// image, so that an object mapped by several processes is stored once and
// restored as one object they all map.
type Shared struct {
	dumped map[string]map[uint64]bool // object → page offsets stored
}

// NewShared starts the record for one checkpoint.
func NewShared() *Shared { return &Shared{dumped: map[string]map[uint64]bool{}} }

// claim reports whether page pgoff of object obj still has to be stored,
// and marks it stored.
func (s *Shared) claim(obj string, pgoff uint64) bool {
	m := s.dumped[obj]
	if m == nil {
		m = map[uint64]bool{}
		s.dumped[obj] = m
	}
	if m[pgoff] {
		return false
	}
	m[pgoff] = true
	return true
}
