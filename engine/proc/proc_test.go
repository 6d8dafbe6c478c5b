package proc

import (
	"os"
	"testing"
)

func TestParseSmaps(t *testing.T) {
	data := []byte(`55d4c8a00000-55d4c8a02000 r--p 00000000 fe:00 123   /usr/bin/my prog
Size:                  8 kB
VmFlags: rd mr mw me dw sd
7ffd1000-7ffd2000 rw-p 00000000 00:00 0                          [stack]
Rss:                   4 kB
VmFlags: rd wr mr mw me gd ac
7ffd3000-7ffd4000 rw-s 00000000 00:01 9 
`)
	maps, err := parseSmaps(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) != 3 {
		t.Fatalf("got %d mappings, want 3", len(maps))
	}
	if maps[0].Path != "/usr/bin/my prog" || maps[0].Inode != 123 || maps[0].Start != 0x55d4c8a00000 || !maps[0].HasFlag("dw") {
		t.Errorf("first mapping parsed as %+v", maps[0])
	}
	if maps[1].Path != "[stack]" || !maps[1].HasFlag("gd") || !maps[1].Writable() {
		t.Errorf("stack parsed as %+v", maps[1])
	}
	if !maps[2].Shared() || maps[2].Path != "" {
		t.Errorf("shared anon parsed as %+v", maps[2])
	}
	if _, err := parseSmaps([]byte("VmFlags: rd\n")); err == nil {
		t.Error("VmFlags before a mapping must be an error")
	}
}

func TestParseStat(t *testing.T) {
	line := "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 100 1000 10 18446744073709551615 " +
		"4194304 4200000 140733000000000 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 6300000 6300100 6400000 140733000001000 140733000001100 140733000001100 140733000001200 0\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != 1234 || st.Comm != "a (weird) name" || st.PPID != 1 || st.State != 'S' {
		t.Errorf("header fields: %+v", st)
	}
	if st.StartCode != 4194304 || st.EndCode != 4200000 || st.StartStack != 140733000000000 {
		t.Errorf("code/stack fields: %+v", st)
	}
	if st.StartData != 6300000 || st.EndData != 6300100 || st.StartBrk != 6400000 || st.EnvEnd != 140733000001200 {
		t.Errorf("data/brk/env fields: %+v", st)
	}
	if _, err := parseStat([]byte("12 (x) S 1")); err == nil {
		t.Error("a short stat line must be an error")
	}
}

func TestReadSelf(t *testing.T) {
	pid := os.Getpid()
	if _, err := ReadSmaps(pid); err != nil {
		t.Fatal(err)
	}
	st, err := ReadStatus("self")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := st.NSPid(); err != nil || n <= 0 {
		t.Fatalf("NSPid = %d, %v", n, err)
	}
	fds, err := ReadFDs(pid)
	if err != nil || len(fds) < 3 {
		t.Fatalf("ReadFDs: %d fds, %v", len(fds), err)
	}
	pm, err := OpenPagemap(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	x := make([]byte, 4096)
	x[0] = 1
	addr := uint64(uintptrOf(x)) &^ 4095
	e, err := pm.Read(addr, addr+4096, nil)
	if err != nil || e[0]&PagePresent == 0 {
		t.Fatalf("pagemap of a touched page: %#x, %v", e, err)
	}
}
