package stub

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestBuildParses(t *testing.T) {
	for _, base := range []uint64{0x10000, 0x7f0000000000} {
		img, l := Build(base, 64<<10)
		f, err := elf.NewFile(bytes.NewReader(img))
		if err != nil {
			t.Fatalf("base %#x: %v", base, err)
		}
		if f.Entry != l.Entry || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
			t.Fatalf("base %#x: entry %#x type %v machine %v", base, f.Entry, f.Type, f.Machine)
		}
		if len(f.Progs) != 2 || f.Progs[1].Vaddr != l.Scratch || f.Progs[1].Memsz != 64<<10 {
			t.Fatalf("base %#x: program headers %+v", base, f.Progs)
		}
		if img[l.Gadget-base] != 0x0f || img[l.Gadget-base+1] != 0x05 || img[l.Gadget-base+2] != 0xcc {
			t.Fatalf("base %#x: gadget bytes wrong", base)
		}
	}
}

// TestStubRuns executes a generated stub and checks that the kernel maps it
// where asked and that it sits in pause(2).
func TestStubRuns(t *testing.T) {
	img, l := Build(0x200000, 16<<10)
	path := filepath.Join(t.TempDir(), "stub")
	if err := os.WriteFile(path, img, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var maps []byte
	for i := 0; i < 100; i++ {
		maps, _ = os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/maps")
		if bytes.Contains(maps, []byte("00200000-00201000 r-xp")) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !bytes.Contains(maps, []byte("00200000-00201000 r-xp")) || !strings.Contains(string(maps), "00201000-00202000 rw-p") || !strings.Contains(string(maps), "00202000-00205000 rw-p") {
		t.Fatalf("stub not mapped as expected (layout %+v):\n%s", l, maps)
	}
	time.Sleep(50 * time.Millisecond)
	wchan, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/syscall")
	if !strings.HasPrefix(string(wchan), "34 ") {
		t.Fatalf("stub not in pause(2): /proc/pid/syscall = %q", wchan)
	}
}
