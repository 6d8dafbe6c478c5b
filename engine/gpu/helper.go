package gpu

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// HelperName is the helper program's file name, looked for beside the
// supervisor's executable; $CKPT_APPTAINER_CUDA_HELPER overrides where.
const HelperName = "ckpt-apptainer-cuda"

// request is one call to the helper, one JSON line on its stdin.
type request struct {
	Op        string `json:"op"` // lock, checkpoint, restore, unlock, state
	PID       int    `json:"pid,omitempty"`
	TimeoutMs int64  `json:"timeout_ms,omitempty"`
	Pairs     []Pair `json:"pairs,omitempty"`
}

// response is the helper's answer, one JSON line on its stdout. The first
// line, before any request, says whether the driver could be opened.
type response struct {
	Error   string `json:"error,omitempty"`
	State   State  `json:"state,omitempty"`
	Version int    `json:"version,omitempty"`
}

// Serve answers requests from r on w with d until r ends: the helper's
// main loop. openErr, when not nil, is why the driver could not be
// opened; it is the only answer.
func Serve(d Driver, openErr error, r io.Reader, w io.Writer) error {
	enc := json.NewEncoder(w)
	if openErr != nil {
		return enc.Encode(response{Error: openErr.Error()})
	}
	v, err := d.Version()
	if err != nil {
		return enc.Encode(response{Error: err.Error()})
	}
	if err := enc.Encode(response{Version: v}); err != nil {
		return err
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var req request
		var resp response
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			resp.Error = fmt.Sprintf("bad request %q: %v", sc.Text(), err)
		} else {
			switch req.Op {
			case "lock":
				err = d.Lock(req.PID, time.Duration(req.TimeoutMs)*time.Millisecond)
			case "checkpoint":
				err = d.Checkpoint(req.PID)
			case "restore":
				err = d.Restore(req.PID, req.Pairs)
			case "unlock":
				err = d.Unlock(req.PID)
			case "state":
				resp.State, err = d.State(req.PID)
			default:
				err = fmt.Errorf("unknown operation %q", req.Op)
			}
			if err != nil {
				resp.Error = err.Error()
			}
		}
		if err := enc.Encode(resp); err != nil {
			return err
		}
	}
	return sc.Err()
}

// Helper is a Driver that runs the driver calls in the helper process.
type Helper struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	out     *bufio.Scanner
	version int
}

var _ Driver = (*Helper)(nil)

// HelperPath finds the helper program.
func HelperPath() (string, error) {
	if p := os.Getenv("CKPT_APPTAINER_CUDA_HELPER"); p != "" {
		return p, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	p := filepath.Join(filepath.Dir(exe), HelperName)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("the GPU helper %s is missing (it is built and installed with ckpt-apptainer): %w", p, err)
	}
	return p, nil
}

// StartInstalledHelper starts the helper HelperPath finds.
func StartInstalledHelper() (*Helper, error) {
	path, err := HelperPath()
	if err != nil {
		return nil, err
	}
	return StartHelper(path)
}

// StartHelper starts the helper program at path and waits for it to open
// the driver. Close ends it.
func StartHelper(path string) (*Helper, error) {
	cmd := exec.Command(path)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the GPU helper %s: %w", path, err)
	}
	h := &Helper{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	hello, err := h.read()
	if err == nil && hello.Error != "" {
		err = errors.New(hello.Error)
	}
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("GPU helper: %w", err)
	}
	h.version = hello.Version
	return h, nil
}

func (h *Helper) read() (response, error) {
	var resp response
	if !h.out.Scan() {
		if err := h.out.Err(); err != nil {
			return resp, err
		}
		return resp, fmt.Errorf("the helper ended without an answer")
	}
	if err := json.Unmarshal(h.out.Bytes(), &resp); err != nil {
		return resp, fmt.Errorf("answer %q: %w", h.out.Text(), err)
	}
	return resp, nil
}

func (h *Helper) do(req request) (response, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return response{}, err
	}
	if _, err := h.in.Write(append(b, '\n')); err != nil {
		return response{}, fmt.Errorf("GPU helper: %w", err)
	}
	resp, err := h.read()
	if err != nil {
		return resp, fmt.Errorf("GPU helper: %w", err)
	}
	if resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// Lock implements Driver.
func (h *Helper) Lock(pid int, timeout time.Duration) error {
	_, err := h.do(request{Op: "lock", PID: pid, TimeoutMs: timeout.Milliseconds()})
	return err
}

// Checkpoint implements Driver.
func (h *Helper) Checkpoint(pid int) error {
	_, err := h.do(request{Op: "checkpoint", PID: pid})
	return err
}

// Restore implements Driver.
func (h *Helper) Restore(pid int, pairs []Pair) error {
	_, err := h.do(request{Op: "restore", PID: pid, Pairs: pairs})
	return err
}

// Unlock implements Driver.
func (h *Helper) Unlock(pid int) error {
	_, err := h.do(request{Op: "unlock", PID: pid})
	return err
}

// State implements Driver.
func (h *Helper) State(pid int) (State, error) {
	resp, err := h.do(request{Op: "state", PID: pid})
	return resp.State, err
}

// Version implements Driver.
func (h *Helper) Version() (int, error) { return h.version, nil }

// Close ends the helper.
func (h *Helper) Close() error {
	h.in.Close()
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		h.cmd.Process.Kill()
		return <-done
	}
}
