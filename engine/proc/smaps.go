package proc

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mapping is one VMA as /proc/pid/smaps shows it.
type Mapping struct {
	Start, End uint64
	Perms      string // "rwxp" style
	Offset     uint64
	Dev        string
	Inode      uint64
	Path       string
	VmFlags    []string
}

// Readable, Writable, Executable and Shared decode Perms.
func (m *Mapping) Readable() bool   { return m.Perms[0] == 'r' }
func (m *Mapping) Writable() bool   { return m.Perms[1] == 'w' }
func (m *Mapping) Executable() bool { return m.Perms[2] == 'x' }
func (m *Mapping) Shared() bool     { return m.Perms[3] == 's' }

// HasFlag reports whether smaps listed the two-letter VmFlag f.
func (m *Mapping) HasFlag(f string) bool {
	for _, x := range m.VmFlags {
		if x == f {
			return true
		}
	}
	return false
}

// Size is the length of the mapping in bytes.
func (m *Mapping) Size() uint64 { return m.End - m.Start }

// ReadSmaps parses /proc/pid/smaps.
func ReadSmaps(pid int) ([]Mapping, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, fmt.Errorf("read smaps of %d: %w", pid, err)
	}
	return parseSmaps(data)
}

// ReadMaps parses /proc/pid/maps (no VmFlags).
func ReadMaps(pid int) ([]Mapping, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, fmt.Errorf("read maps of %d: %w", pid, err)
	}
	return parseSmaps(data)
}

func parseSmaps(data []byte) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "VmFlags:") {
			if len(out) == 0 {
				return nil, fmt.Errorf("smaps: VmFlags before any mapping")
			}
			out[len(out)-1].VmFlags = strings.Fields(line[len("VmFlags:"):])
			continue
		}
		if !isMappingLine(line) {
			continue
		}
		m, err := parseMapLine(line)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// isMappingLine tells a VMA header line ("start-end perms ...") from the
// "Key: value" lines that follow it in smaps.
func isMappingLine(line string) bool {
	sp := strings.IndexByte(line, ' ')
	if sp < 0 {
		return false
	}
	return strings.IndexByte(line[:sp], '-') > 0 && !strings.HasSuffix(line[:sp], ":")
}

func parseMapLine(line string) (Mapping, error) {
	var m Mapping
	// start-end perms offset dev inode path; the path may contain spaces.
	f := strings.SplitN(line, " ", 6)
	if len(f) < 5 {
		return m, fmt.Errorf("maps: malformed line %q", line)
	}
	dash := strings.IndexByte(f[0], '-')
	var err error
	if m.Start, err = strconv.ParseUint(f[0][:dash], 16, 64); err != nil {
		return m, fmt.Errorf("maps: line %q: %w", line, err)
	}
	if m.End, err = strconv.ParseUint(f[0][dash+1:], 16, 64); err != nil {
		return m, fmt.Errorf("maps: line %q: %w", line, err)
	}
	m.Perms = f[1]
	if len(m.Perms) != 4 {
		return m, fmt.Errorf("maps: line %q: bad permissions", line)
	}
	if m.Offset, err = strconv.ParseUint(f[2], 16, 64); err != nil {
		return m, fmt.Errorf("maps: line %q: %w", line, err)
	}
	m.Dev = f[3]
	if m.Inode, err = strconv.ParseUint(f[4], 10, 64); err != nil {
		return m, fmt.Errorf("maps: line %q: %w", line, err)
	}
	if len(f) == 6 {
		m.Path = strings.TrimLeft(f[5], " ")
	}
	return m, nil
}
