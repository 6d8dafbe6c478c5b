package engine

import (
	"bufio"
	"reflect"
	"strings"
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

func TestParseCPUInfo(t *testing.T) {
	text := `processor	: 0
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu vme hypervisor sse sse2 avx avx2 avx512f constant_tsc amx_tile
processor	: 1
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu sse
`
	cpu, err := parseCPUInfo(bufio.NewScanner(strings.NewReader(text)))
	if err != nil {
		t.Fatal(err)
	}
	want := &image.CPU{Model: "Intel(R) Xeon(R) Platinum 8480+", Flags: []string{"amx_tile", "avx", "avx2", "avx512f", "sse", "sse2"}}
	if !reflect.DeepEqual(cpu, want) {
		t.Errorf("parsed %+v, want %+v (ISA flags of the first processor, sorted)", cpu, want)
	}
	if _, err := parseCPUInfo(bufio.NewScanner(strings.NewReader("processor : 0\n"))); err == nil {
		t.Error("no flags line accepted")
	}
}

func TestMissingCPUFlags(t *testing.T) {
	tests := []struct {
		want, have []string
		missing    []string
	}{
		{[]string{"avx", "avx2"}, []string{"avx", "avx2", "avx512f"}, nil},
		{[]string{"avx", "avx512f", "avx512bw"}, []string{"avx"}, []string{"avx512f", "avx512bw"}},
		{nil, []string{"avx"}, nil},
	}
	for _, tt := range tests {
		got := missingCPUFlags(&image.CPU{Flags: tt.want}, &image.CPU{Flags: tt.have})
		if !reflect.DeepEqual(got, tt.missing) {
			t.Errorf("job %v on %v: missing %v, want %v", tt.want, tt.have, got, tt.missing)
		}
	}
}

func TestCPUSeenKeepsEveryNodesFlags(t *testing.T) {
	here, err := CPUSeen(nil)
	if err != nil {
		t.Skip(err)
	}
	seen, err := CPUSeen(&image.CPU{Model: "old node", Flags: []string{"avx512_4vnniw"}})
	if err != nil {
		t.Fatal(err)
	}
	if seen.Model != here.Model || len(seen.Flags) != len(here.Flags)+1 || missingCPUFlags(&image.CPU{Flags: []string{"avx512_4vnniw"}}, seen) != nil {
		t.Errorf("CPUSeen = %+v: want this node's model and its flags plus the earlier node's", seen)
	}
}

func TestCheckRequirementsRefusesMissingCPUFeature(t *testing.T) {
	m := &image.Manifest{Generation: 3, CPU: &image.CPU{Model: "Xeon Phi 7250", Flags: []string{"avx512_4vnniw", "sse2"}}}
	err := CheckRequirements(m, false)
	if err == nil || !strings.Contains(err.Error(), "avx512_4vnniw") || !strings.Contains(err.Error(), "Xeon Phi 7250") ||
		strings.Contains(err.Error(), "sse2") {
		t.Fatalf("err = %v, want the missing extension avx512_4vnniw named, and only it", err)
	}
}

func TestExtraXFeatures(t *testing.T) {
	const sse, avx, mpx, avx512, pkru = 0x3, 1 << 2, 1<<3 | 1<<4, 7 << 5, 1 << 9
	tests := []struct {
		name       string
		want, have uint64
		extra      uint64
	}{
		{"same CPU", sse | avx, sse | avx, 0},
		{"fewer here", sse | avx | avx512, sse | avx, 0},
		{"MPX and PKRU here", sse | avx, sse | avx | mpx | pkru, mpx | pkru},
		{"AVX-512 here", sse | avx, sse | avx | avx512, avx512},
		{"image without it", 0, sse | avx | avx512, 0},
	}
	for _, tt := range tests {
		got := extraXFeatures(&image.CPU{XFeatures: tt.want}, &image.CPU{XFeatures: tt.have})
		if got != tt.extra {
			t.Errorf("%s: extra %#x, want %#x", tt.name, got, tt.extra)
		}
	}
}

func TestCPUSeenKeepsCommonXFeatures(t *testing.T) {
	here, err := CPUSeen(nil)
	if err != nil || here.XFeatures == 0 {
		t.Skip("this CPU does not say its register state")
	}
	seen, err := CPUSeen(&image.CPU{Model: "old node", XFeatures: 0x7})
	if err != nil {
		t.Fatal(err)
	}
	if seen.XFeatures != here.XFeatures&0x7 {
		t.Errorf("CPUSeen XFeatures = %#x, want what both nodes enable, %#x", seen.XFeatures, here.XFeatures&0x7)
	}
}
