package supervisor

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// The control socket lives in the checkpoint directory (0700), so only its
// owner can reach it; the socket itself is 0600 as well. Where the
// directory cannot hold it (a file system that takes no sockets, as 9p
// and some cluster file systems, or a path longer than a socket address
// allows) it lives in the user's runtime directory on this node instead,
// named after the checkpoint directory's device and inode, which the
// client finds the same way.
const controlName = "control.sock"

// maxSocketPath is the room in sockaddr_un.sun_path.
const maxSocketPath = 107

func controlPath(dir string) string { return filepath.Join(dir, controlName) }

// controlRequest is one line a client sends.
type controlRequest struct {
	Op   string `json:"op"` // "checkpoint" or "status"
	Kill bool   `json:"kill,omitempty"`
	// Progress asks for the checkpoint's figures while it runs.
	Progress bool `json:"progress,omitempty"`
}

// controlAnswer is one message of the supervisor's answer to a checkpoint
// request: progress figures, any number of them, then the result.
type controlAnswer struct {
	Progress *progressFigures `json:"progress,omitempty"`
	CheckpointResult
}

// progressFigures is how far the checkpoint being taken has come.
type progressFigures struct {
	Op    string `json:"op"`
	Done  int64  `json:"done"`
	Total int64  `json:"total"`
}

// progressSendEvery is how often a client that asked for progress is sent
// the figures.
const progressSendEvery = 200 * time.Millisecond

// sendProgress sends the figures of the running checkpoint to enc until
// stop is closed; done is closed once it has stopped writing.
func sendProgress(enc *json.Encoder, st *jobState, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(progressSendEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if op, d, total, ok := st.currentProgress(); ok {
				if enc.Encode(controlAnswer{Progress: &progressFigures{Op: op, Done: d, Total: total}}) != nil {
					return
				}
			}
		}
	}
}

// readAnswer reads the supervisor's answer to a checkpoint request,
// passing progress figures to onProgress (when set) as they come.
func readAnswer(dec *json.Decoder, onProgress func(op string, done, total int64)) (*CheckpointResult, error) {
	for {
		var a controlAnswer
		if err := dec.Decode(&a); err != nil {
			return nil, err
		}
		if a.Progress == nil {
			return &a.CheckpointResult, nil
		}
		if onProgress != nil {
			onProgress(a.Progress.Op, a.Progress.Done, a.Progress.Total)
		}
	}
}

// listenControl serves checkpoint requests for s until the listener closes.
func listenControl(dir string, s *supervisor) (net.Listener, error) {
	ln, err := listenUnix(controlPath(dir))
	if err != nil {
		path, rerr := runtimeControlPath(dir, true)
		if rerr != nil {
			return nil, fmt.Errorf("control socket: %w; in the runtime directory: %w", err, rerr)
		}
		var err2 error
		if ln, err2 = listenUnix(path); err2 != nil {
			return nil, fmt.Errorf("control socket: %w; %w", err, err2)
		}
		s.log.Debugf("control socket %s: the checkpoint directory cannot hold one (%v)", path, err)
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.answering.Add(1)
			go serveControl(conn, s)
		}
	}()
	return ln, nil
}

// listenUnix listens on a socket at path, owner-only.
func listenUnix(path string) (net.Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("socket path %s is %d bytes, more than the %d a socket address holds", path, len(path), maxSocketPath)
	}
	// A socket left by a supervisor that died: the directory lock we hold
	// proves nobody serves it.
	os.Remove(path)
	old := unix.Umask(0o177)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	return ln, err
}

// runtimeControlPath is where the control socket of dir lives when dir
// cannot hold it: in $XDG_RUNTIME_DIR/ckpt-apptainer, else in
// ckpt-apptainer-UID in the temporary directory, either of which must be
// the user's own and private. create makes the directory when missing.
func runtimeControlPath(dir string, create bool) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return "", fmt.Errorf("stat %s: %w", dir, err)
	}
	base := filepath.Join(os.TempDir(), fmt.Sprintf("ckpt-apptainer-%d", os.Getuid()))
	if xdg := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(xdg) {
		base = filepath.Join(xdg, "ckpt-apptainer")
	}
	if create {
		if err := os.Mkdir(base, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return "", err
		}
	}
	var bst unix.Stat_t
	if err := unix.Lstat(base, &bst); err != nil {
		return "", err
	}
	if bst.Mode&unix.S_IFMT != unix.S_IFDIR || int(bst.Uid) != os.Getuid() || bst.Mode&0o077 != 0 {
		return "", fmt.Errorf("%s is not a directory of yours that only you can use (mode %#o, owner %d): remove it", base, bst.Mode&0o7777, bst.Uid)
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%d:%d", st.Dev, st.Ino))
	return filepath.Join(base, "ckpt-"+hex.EncodeToString(sum[:8])+".sock"), nil
}

// dialControl connects to the supervisor of dir: in dir, else in the
// runtime directory.
func dialControl(dir string) (net.Conn, error) {
	conn, err := net.DialTimeout("unix", controlPath(dir), 5*time.Second)
	if err == nil {
		return conn, nil
	}
	if path, rerr := runtimeControlPath(dir, false); rerr == nil {
		if c, err2 := net.DialTimeout("unix", path, 5*time.Second); err2 == nil {
			return c, nil
		}
	}
	return nil, err
}

func serveControl(conn net.Conn, s *supervisor) {
	defer s.answering.Done()
	defer conn.Close()
	var req controlRequest
	if err := json.NewDecoder(bufio.NewReader(conn)).Decode(&req); err != nil {
		json.NewEncoder(conn).Encode(CheckpointResult{Error: "bad request: " + err.Error()})
		return
	}
	var res *CheckpointResult
	var err error
	switch req.Op {
	case "status":
		json.NewEncoder(conn).Encode(s.status())
		return
	case "checkpoint":
		stopProgress := func() {}
		if req.Progress {
			stop, stopped := make(chan struct{}), make(chan struct{})
			go sendProgress(json.NewEncoder(conn), &s.state, stop, stopped)
			stopProgress = func() { close(stop); <-stopped }
		}
		res, err = s.checkpointLogged(req.Kill)
		stopProgress() // the result comes after the last figures
	default:
		err = fmt.Errorf("unknown operation %q", req.Op)
	}
	if err != nil {
		res = &CheckpointResult{Error: err.Error()}
	}
	json.NewEncoder(conn).Encode(res)
	if err == nil && req.Kill {
		s.sb.Kill()
	}
}

// RequestCheckpoint asks the supervisor serving dir for a checkpoint.
// onProgress, when set, is given the figures of the checkpoint while it
// runs.
func RequestCheckpoint(dir string, kill bool, timeout time.Duration, onProgress func(op string, done, total int64)) (*CheckpointResult, error) {
	conn, err := connectSupervisor(dir, func() string { return " (start one with `ckpt-apptainer launch` or `restart`)" })
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// The newest generation before the request: a supervisor that dies
	// between its commit and its answer leaves a newer one.
	before := newestCommitted(dir)
	conn.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(conn).Encode(controlRequest{Op: "checkpoint", Kill: kill, Progress: onProgress != nil}); err != nil {
		return nil, fmt.Errorf("send request: %w", err)
	}
	res, err := readAnswer(json.NewDecoder(conn), onProgress)
	if err != nil {
		if committed := committedSince(dir, before); committed != nil {
			return committed, nil
		}
		return nil, fmt.Errorf("read the supervisor's answer: %w (and no new generation is in %s: the checkpoint did not complete)", err, dir)
	}
	if res.Error != "" {
		return nil, fmt.Errorf("checkpoint failed: %s", res.Error)
	}
	return res, nil
}

// connectSupervisor connects a client to the supervisor of dir. Where
// none listens, the error says whether one is still starting the job, or
// that none runs, followed by what idle says.
func connectSupervisor(dir string, idle func() string) (net.Conn, error) {
	conn, err := dialControl(dir)
	if err == nil {
		return conn, nil
	}
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
		if pid := startingSupervisor(dir); pid != 0 {
			return nil, fmt.Errorf("the job of checkpoint directory %s is still being started or restored (supervisor pid %d); it takes requests once it runs: try again in a moment", dir, pid)
		}
		return nil, fmt.Errorf("no running job supervises checkpoint directory %s%s", dir, idle())
	}
	return nil, fmt.Errorf("connect to the supervisor: %w", err)
}

// startingSupervisor returns the pid of a supervisor of dir on this host
// that runs but does not serve requests yet (its job is still being
// started or restored), or 0.
func startingSupervisor(dir string) int {
	pid, host, ok := image.LockHolder(dir)
	if me, _ := os.Hostname(); !ok || host != me {
		return 0
	}
	// The pid may have been reused since: it must be this program.
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	self, serr := os.ReadFile("/proc/self/comm")
	if err != nil || serr != nil || string(comm) != string(self) {
		return 0
	}
	return pid
}

// newestCommitted is the newest generation in dir, 0 for none.
func newestCommitted(dir string) int {
	st, err := image.OpenStore(dir, false)
	if err != nil {
		return 0
	}
	gens, err := st.Generations()
	if err != nil || len(gens) == 0 {
		return 0
	}
	return gens[len(gens)-1]
}

// committedSince describes the newest generation in dir when it is newer
// than before and verifies: the checkpoint a supervisor committed before
// it died without answering.
func committedSince(dir string, before int) *CheckpointResult {
	st, err := image.OpenStore(dir, false)
	if err != nil {
		return nil
	}
	n := newestCommitted(dir)
	if n <= before {
		return nil
	}
	g, err := st.Open(n)
	if err != nil || g.Verify() != nil {
		return nil
	}
	s := g.Manifest.Stats
	return &CheckpointResult{Generation: n, Bytes: s.Bytes, Duration: s.Duration, Stopped: s.StoppedFor}
}
