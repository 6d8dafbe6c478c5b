package engine

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/abi"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/memory"
)

// envIPCChild makes the test binary a process in a fresh user and IPC
// namespace that takes commands on stdin (TestSysVIPCChild).
const envIPCChild = "CKPT_SYSVIPC_CHILD"

// ipcNS is a child process alone in a new user and IPC namespace.
type ipcNS struct {
	cmd *exec.Cmd
	in  io.Writer
	out *bufio.Reader
}

// newIPCNS starts a child in a new user namespace (the caller's ids
// mapped to themselves, as in the job sandbox) and a new IPC namespace.
func newIPCNS(t *testing.T) *ipcNS {
	t.Helper()
	cmd := exec.Command("/proc/self/exe", "-test.run=^TestSysVIPCChild$")
	cmd.Env = append(os.Environ(), envIPCChild+"=1")
	cmd.Stderr = os.Stderr
	uid, gid := os.Getuid(), os.Getgid()
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWIPC,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}},
		Pdeathsig:   syscall.SIGKILL,
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start a child in new user and IPC namespaces: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ns := &ipcNS{cmd: cmd, in: in, out: bufio.NewReader(out)}
	ns.do(t, "hello", nil)
	return ns
}

// do sends one command and decodes its JSON answer into v.
func (ns *ipcNS) do(t *testing.T, command string, v any) {
	t.Helper()
	if _, err := fmt.Fprintln(ns.in, command); err != nil {
		t.Fatalf("%s: %v", command, err)
	}
	for {
		line, err := ns.out.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: no answer: %v", command, err)
		}
		// The test framework prints its own lines; answers are tagged.
		body, ok := strings.CutPrefix(line, "ANSWER ")
		if !ok {
			continue
		}
		var a struct {
			Error string
			Value json.RawMessage
		}
		if err := json.Unmarshal([]byte(body), &a); err != nil {
			t.Fatalf("%s: bad answer %q: %v", command, line, err)
		}
		if a.Error != "" {
			t.Fatalf("%s: %s", command, a.Error)
		}
		if v != nil {
			if err := json.Unmarshal(a.Value, v); err != nil {
				t.Fatalf("%s: decode %s: %v", command, a.Value, err)
			}
		}
		return
	}
}

// TestSysVIPCChild is the child's command loop; it does nothing in a
// normal test run.
func TestSysVIPCChild(t *testing.T) {
	if os.Getenv(envIPCChild) == "" {
		t.Skip("only run as the child of the System V IPC tests")
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		var v any
		var err error
		switch f[0] {
		case "hello":
		case "create":
			err = childCreate()
		case "inspect":
			v, err = childInspect()
		case "attach":
			id, _ := strconv.Atoi(f[1])
			_, err = unix.SysvShmAttach(id, 0, 0)
		default:
			err = fmt.Errorf("unknown command %q", f[0])
		}
		a := struct {
			Error string
			Value any
		}{Value: v}
		if err != nil {
			a.Error = err.Error()
		}
		b, _ := json.Marshal(a)
		fmt.Printf("ANSWER %s\n", b)
	}
	os.Exit(0)
}

// The objects childCreate makes.
const (
	testShmSize = 3*4096 + 100 // page 1 stays a hole; the last page is partial
	testMsgBig  = 3000
)

// childCreate makes objects of every kind with contents, ids with gaps
// (objects created and removed in between) and one segment marked for
// destruction while attached.
func childCreate() error {
	sysv := func(nr uintptr, a ...uintptr) (uintptr, error) {
		var args [6]uintptr
		copy(args[:], a)
		r, _, e := unix.Syscall6(nr, args[0], args[1], args[2], args[3], args[4], args[5])
		if e != 0 {
			return 0, fmt.Errorf("syscall %d%v: %w", nr, a, e)
		}
		return r, nil
	}
	gap := func() error {
		id, err := unix.SysvShmGet(unix.IPC_PRIVATE, 4096, unix.IPC_CREAT|0o600)
		if err != nil {
			return err
		}
		_, err = unix.SysvShmCtl(id, unix.IPC_RMID, nil)
		return err
	}
	if err := gap(); err != nil {
		return err
	}
	// A keyed segment with data in pages 0, 2 and 3.
	id, err := unix.SysvShmGet(0x1111, testShmSize, unix.IPC_CREAT|0o640)
	if err != nil {
		return err
	}
	b, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		return err
	}
	for i := range 4096 {
		b[i] = byte(i*7 + 1)
		b[2*4096+i] = byte(i*13 + 5)
	}
	copy(b[3*4096:], "end of the segment")
	if err := unix.SysvShmDetach(b); err != nil {
		return err
	}
	if err := gap(); err != nil {
		return err
	}
	// A private segment, attached and marked for destruction.
	did, err := unix.SysvShmGet(unix.IPC_PRIVATE, 8192, unix.IPC_CREAT|0o600)
	if err != nil {
		return err
	}
	db, err := unix.SysvShmAttach(did, 0, 0)
	if err != nil {
		return err
	}
	copy(db[5000:], "still attached")
	if _, err := unix.SysvShmCtl(did, unix.IPC_RMID, nil); err != nil {
		return err
	}
	// A semaphore set with values.
	sid, err := sysv(unix.SYS_SEMGET, 0x2222, 3, unix.IPC_CREAT|0o660)
	if err != nil {
		return err
	}
	vals := []uint16{1, 7, 32767}
	if _, err := sysv(unix.SYS_SEMCTL, sid, 0, semSetAll, uintptr(unsafe.Pointer(&vals[0]))); err != nil {
		return err
	}
	if err := gap(); err != nil {
		return err
	}
	// A queue with messages and a lowered byte limit, and an empty one.
	qid, err := sysv(unix.SYS_MSGGET, 0x3333, unix.IPC_CREAT|0o620)
	if err != nil {
		return err
	}
	var ds [msqidDsSize]byte
	if _, err := sysv(unix.SYS_MSGCTL, qid, unix.IPC_STAT, uintptr(unsafe.Pointer(&ds[0]))); err != nil {
		return err
	}
	abi.Order.PutUint64(ds[offMsgQbytes:], 10000) // below msgmnb: raising it takes host CAP_SYS_RESOURCE
	if _, err := sysv(unix.SYS_MSGCTL, qid, unix.IPC_SET, uintptr(unsafe.Pointer(&ds[0]))); err != nil {
		return err
	}
	big := make([]byte, testMsgBig)
	for i := range big {
		big[i] = byte(i)
	}
	for _, m := range []struct {
		typ  int64
		data []byte
	}{{1, []byte("hello")}, {5, big}, {2, nil}} {
		buf := make([]byte, 8+len(m.data))
		abi.Order.PutUint64(buf, uint64(m.typ))
		copy(buf[8:], m.data)
		if _, err := sysv(unix.SYS_MSGSND, qid, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(m.data)), ipcNowait); err != nil {
			return err
		}
	}
	_, err = sysv(unix.SYS_MSGGET, unix.IPC_PRIVATE, unix.IPC_CREAT|0o600)
	return err
}

// ipcView is what a process in the namespace sees, read with its own
// system calls and /proc/sysvipc, independently of the code under test.
type ipcView struct {
	Shm, Sem, Msg [][]string // /proc/sysvipc lines: fields that a restore keeps
	ShmData       []string   // sha256 of each segment's contents, in Shm order
	SemValues     [][]uint16
	QBytes        []uint64
	Messages      [][]string // type:sha256 of each message, oldest first
}

// childInspect reads the view. It runs in the namespace's only process.
func childInspect() (*ipcView, error) {
	var v ipcView
	table := func(name string, keep []int) ([][]string, error) {
		b, err := os.ReadFile("/proc/sysvipc/" + name)
		if err != nil {
			return nil, err
		}
		var out [][]string
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			var row []string
			for _, i := range keep {
				row = append(row, f[i])
			}
			out = append(out, row)
		}
		return out, nil
	}
	var err error
	// key id perms size nattch uid gid cuid cgid rss swap (rss before the
	// contents are read: holes must stay holes)
	if v.Shm, err = table("shm", []int{0, 1, 2, 3, 6, 7, 8, 9, 10, 14, 15}); err != nil {
		return nil, err
	}
	// key id perms nsems uid gid cuid cgid
	if v.Sem, err = table("sem", []int{0, 1, 2, 3, 4, 5, 6, 7}); err != nil {
		return nil, err
	}
	// key id perms cbytes qnum uid gid cuid cgid
	if v.Msg, err = table("msg", []int{0, 1, 2, 3, 4, 7, 8, 9, 10}); err != nil {
		return nil, err
	}
	for _, row := range v.Shm {
		id, _ := strconv.Atoi(row[1])
		size, _ := strconv.Atoi(row[3])
		b, err := unix.SysvShmAttach(id, 0, unix.SHM_RDONLY)
		if err != nil {
			return nil, fmt.Errorf("shmat %d: %w", id, err)
		}
		// Pages not in memory are holes (nothing is swapped in a test);
		// reading them would fault them in and change rss.
		vec := make([]byte, (len(b)+4095)/4096)
		if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
			return nil, fmt.Errorf("mincore %d: %w", id, e)
		}
		h := sha256.New()
		zero := make([]byte, 4096)
		for p := 0; p < size; p += 4096 {
			end := min(p+4096, size)
			if vec[p/4096]&1 != 0 {
				h.Write(b[p:end])
			} else {
				h.Write(zero[:end-p])
			}
		}
		v.ShmData = append(v.ShmData, hex.EncodeToString(h.Sum(nil)))
		unix.SysvShmDetach(b)
	}
	for _, row := range v.Sem {
		id, _ := strconv.Atoi(row[1])
		n, _ := strconv.Atoi(row[3])
		vals := make([]uint16, n)
		if _, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), 0, semGetAll, uintptr(unsafe.Pointer(&vals[0])), 0, 0); e != 0 {
			return nil, fmt.Errorf("semctl GETALL %d: %w", id, e)
		}
		v.SemValues = append(v.SemValues, vals)
	}
	for _, row := range v.Msg {
		id, _ := strconv.Atoi(row[1])
		var ds [msqidDsSize]byte
		if _, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), unix.IPC_STAT, uintptr(unsafe.Pointer(&ds[0]))); e != 0 {
			return nil, fmt.Errorf("msgctl IPC_STAT %d: %w", id, e)
		}
		v.QBytes = append(v.QBytes, abi.Order.Uint64(ds[offMsgQbytes:]))
		n, _ := strconv.Atoi(row[4])
		var msgs []string
		buf := make([]byte, 8+65536)
		for i := range n {
			r, _, e := unix.Syscall6(unix.SYS_MSGRCV, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), 65536, uintptr(i), ipcNowait|msgCopy, 0)
			if e != 0 {
				return nil, fmt.Errorf("msgrcv %d #%d: %w", id, i, e)
			}
			sum := sha256.Sum256(buf[8 : 8+r])
			msgs = append(msgs, fmt.Sprintf("%d:%d:%s", abi.Order.Uint64(buf), r, hex.EncodeToString(sum[:8])))
		}
		v.Messages = append(v.Messages, msgs)
	}
	return &v, nil
}

// writer returns an image writer in a fresh store.
func testWriter(t *testing.T) *image.Writer {
	t.Helper()
	st, err := image.OpenStore(filepath.Join(t.TempDir(), "store"), true)
	if err != nil {
		t.Fatal(err)
	}
	w, err := st.Begin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Abort)
	return w
}

func TestSysVIPCDumpRestore(t *testing.T) {
	orig := newIPCNS(t)
	orig.do(t, "create", nil)
	var before ipcView
	orig.do(t, "inspect", &before)
	if len(before.Shm) != 2 || len(before.Sem) != 1 || len(before.Msg) != 2 {
		t.Fatalf("the child made %d segments, %d semaphore sets, %d queues; want 2, 1, 2", len(before.Shm), len(before.Sem), len(before.Msg))
	}

	w := testWriter(t)
	ipc, err := dumpSysVIPC(orig.cmd.Process.Pid, w)
	if err != nil {
		t.Fatalf("dumpSysVIPC: %v", err)
	}
	var after ipcView
	orig.do(t, "inspect", &after)
	// The dump reads without changing anything a process could see, and
	// without faulting in holes (rss is in the view).
	if !reflect.DeepEqual(before, after) {
		t.Errorf("the dump changed the namespace:\nbefore %+v\nafter  %+v", before, after)
	}
	if ipc.Count() != 5 {
		t.Fatalf("dumped %d objects, want 5: %+v", ipc.Count(), ipc)
	}
	var dest []int
	for _, s := range ipc.Shm {
		if s.Destroyed {
			dest = append(dest, s.ID)
		}
	}
	if len(dest) != 1 {
		t.Fatalf("dumped %d segments marked for destruction, want 1", len(dest))
	}
	// Through JSON, as a restart reads it.
	b, err := json.Marshal(ipc)
	if err != nil {
		t.Fatal(err)
	}
	var loaded image.SysVIPC
	if err := json.Unmarshal(b, &loaded); err != nil {
		t.Fatal(err)
	}

	fresh := newIPCNS(t)
	if err := restoreSysVIPC(fresh.cmd.Process.Pid, &loaded, &image.Generation{Dir: w.Dir}); err != nil {
		t.Fatalf("restoreSysVIPC: %v", err)
	}
	// As a restored process would, attach the segment before it is marked
	// for destruction again.
	fresh.do(t, "attach "+strconv.Itoa(dest[0]), nil)
	if err := finishSysVIPC(fresh.cmd.Process.Pid, &loaded); err != nil {
		t.Fatalf("finishSysVIPC: %v", err)
	}
	var restored ipcView
	fresh.do(t, "inspect", &restored)
	if !reflect.DeepEqual(before, restored) {
		t.Errorf("restored namespace differs:\nwant %+v\ngot  %+v", before, restored)
	}

	// A namespace that is not empty is refused, naming what is there.
	err = restoreSysVIPC(fresh.cmd.Process.Pid, &loaded, &image.Generation{Dir: w.Dir})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("restore into a used namespace: %v, want a 'not empty' error", err)
	}
}

func TestSysVIPCSharedNamespace(t *testing.T) {
	// The test process itself shares the supervisor's (its own) namespace.
	self := os.Getpid()
	ipc, err := dumpSysVIPC(self, testWriter(t))
	if err != nil || ipc != nil {
		t.Errorf("dump of a shared namespace = %v, %v; want nothing", ipc, err)
	}
	one := &image.SysVIPC{Sem: []image.SysVSem{{SysVPerm: image.SysVPerm{ID: 0}, Values: []uint16{1}}}}
	err = restoreSysVIPC(self, one, &image.Generation{Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "no IPC namespace of its own") {
		t.Errorf("restore into a shared namespace: %v, want a clear refusal", err)
	}
	if err := restoreSysVIPC(self, nil, &image.Generation{Dir: t.TempDir()}); err != nil {
		t.Errorf("restore of an image without System V IPC: %v", err)
	}
}

func TestSysVIPCRestoreErrors(t *testing.T) {
	uid, gid := os.Getuid(), os.Getgid()
	perm := func(id int, key int32) image.SysVPerm {
		return image.SysVPerm{ID: id, Key: key, CUID: uid, CGID: gid, UID: uid, GID: gid, Mode: 0o600}
	}
	other := perm(1, 1)
	other.CUID = 4242
	tests := []struct {
		name string
		ipc  image.SysVIPC
		want string
	}{
		{"missing data file", image.SysVIPC{Shm: []image.SysVShm{{SysVPerm: perm(5, 9), Size: 4096, Data: "nope.img"}}}, "shm 5 (key 0x9)"},
		{"empty semaphore set", image.SysVIPC{Sem: []image.SysVSem{{SysVPerm: perm(3, 7)}}}, "sem 3 (key 0x7)"},
		{"message too large", image.SysVIPC{Msg: []image.SysVMsq{{SysVPerm: perm(2, 8), QBytes: 16384,
			Messages: []image.SysVMsg{{Type: 1, Data: make([]byte, 1<<20)}}}}}, "msg 2 (key 0x8): message 1 of 1"},
		{"creator not restorable", image.SysVIPC{Sem: []image.SysVSem{{SysVPerm: other, Values: []uint16{0}}}}, "created by uid 4242"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := newIPCNS(t)
			err := restoreSysVIPC(ns.cmd.Process.Pid, &tt.ipc, &image.Generation{Dir: t.TempDir()})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("restore: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestIsSysVShmPath(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"/SYSV00001111 (deleted)", true},
		{"/SYSV00000000 (deleted)", true},
		{"/SYSVdeadbeef (deleted)", true},
		{"/SYSV00001111", false},
		{"/SYSVfile (deleted)", false},
		{"/SYSV000011110 (deleted)", false},
		{"/home/SYSV00001111 (deleted)", false},
	}
	for _, tt := range tests {
		if got := memory.IsSysVShmPath(tt.path); got != tt.want {
			t.Errorf("IsSysVShmPath(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

// TestSysVIPCUnprivileged runs the System V IPC tests again as nobody when
// the tests run as root: the supervisor's path into the job's namespaces
// must not depend on any host privilege.
func TestSysVIPCUnprivileged(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("not root: the other tests already run unprivileged")
	}
	// t.TempDir's parent is private to root; nobody must reach the binary.
	dir, err := os.MkdirTemp("", "ckpt-sysvipc-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "engine.test")
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestSysVIPC(DumpRestore|SharedNamespace|RestoreErrors)$|^TestAttachSysVShm$", "-test.v")
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "TMPDIR=/tmp", "HOME=/"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	t.Logf("as nobody:\n%s", out)
	if err != nil {
		t.Fatalf("System V IPC tests as nobody: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestSysVIPCDumpRestore") {
		t.Fatal("TestSysVIPCDumpRestore did not pass as nobody")
	}
}
