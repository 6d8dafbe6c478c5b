package gpu

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestMain runs the test binary as a helper over a fake driver when asked
// to, so that Helper is tested against a real process and pipe.
func TestMain(m *testing.M) {
	switch os.Getenv("GPU_TEST_HELPER") {
	case "fake":
		d := newFakeDriver(10, 11)
		d.fail["checkpoint 11"] = true
		if err := Serve(d, nil, os.Stdin, os.Stdout); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	case "broken":
		Serve(nil, errors.New("load libcuda.so.1: no such file"), os.Stdin, os.Stdout)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestHelperOverPipe drives the fake driver through a helper process:
// Suspend fails on the second process's checkpoint and puts the first one
// back, and the driver's error comes through with the process named.
func TestHelperOverPipe(t *testing.T) {
	t.Setenv("GPU_TEST_HELPER", "fake")
	h, err := StartHelper(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if v, _ := h.Version(); v != 13000 {
		t.Errorf("version %d, want 13000", v)
	}
	_, err = Suspend(h, []int{10, 11}, DefaultLockTimeout)
	if err == nil || !strings.Contains(err.Error(), "GPU process 11: checkpoint") || !strings.Contains(err.Error(), "CUDA_ERROR_UNKNOWN") {
		t.Fatalf("Suspend: %v, want the checkpoint of 11 refused with the driver's error", err)
	}
	for _, pid := range []int{10, 11} {
		if st, err := h.State(pid); err != nil || st != Running {
			t.Errorf("process %d: %v, %v after the failed Suspend; want running", pid, st, err)
		}
	}
	if _, err := h.State(12); err == nil || !strings.Contains(err.Error(), "CUDA_ERROR_NOT_FOUND") {
		t.Errorf("state of a pid the driver does not know: %v, want the driver's error", err)
	}
}

// TestHelperWithoutDriver checks that a node without the driver library
// gives the helper's reason.
func TestHelperWithoutDriver(t *testing.T) {
	t.Setenv("GPU_TEST_HELPER", "broken")
	if _, err := StartHelper(os.Args[0]); err == nil || !strings.Contains(err.Error(), "libcuda.so.1") {
		t.Fatalf("StartHelper: %v, want the reason naming libcuda.so.1", err)
	}
}
