package namespaces

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/tinyelf"
)

// CheckSandbox tries what Start needs of the node, without starting a
// sandbox: a process in new user, PID and mount namespaces with the
// caller's ids mapped, as an unprivileged user would make it.
func CheckSandbox() error {
	var a tinyelf.Asm
	a.Exit(0)
	f, err := kernel.ExecMemfd("ckpt-check", tinyelf.Build(a.MustAssemble()))
	if err != nil {
		return err
	}
	defer f.Close()
	uid, gid := os.Getuid(), os.Getgid()
	p, err := os.StartProcess(kernel.ProcPath(f), []string{"ckpt-check"}, &os.ProcAttr{Sys: &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWPID | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}},
	}})
	if err != nil {
		return fmt.Errorf("create user, PID and mount namespaces: %w%s", err, userNamespaceHint())
	}
	st, err := p.Wait()
	if err != nil {
		return err
	}
	if !st.Success() {
		return fmt.Errorf("a process in new namespaces ended with %v", st)
	}
	return nil
}

// userNamespaceHint names the sysctl that keeps unprivileged user
// namespaces off, when one does.
func userNamespaceHint() string {
	for _, s := range []struct{ path, off string }{
		{"/proc/sys/user/max_user_namespaces", "0"},
		{"/proc/sys/kernel/unprivileged_userns_clone", "0"},
		{"/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1"},
	} {
		b, err := os.ReadFile(s.path)
		if err == nil && strings.TrimSpace(string(b)) == s.off {
			name := strings.ReplaceAll(strings.TrimPrefix(s.path, "/proc/sys/"), "/", ".")
			return fmt.Sprintf(" (%s is %s: the site must allow unprivileged user namespaces)", name, s.off)
		}
	}
	return ""
}

// PtraceScope reads Yama's kernel.yama.ptrace_scope; -1 without Yama.
func PtraceScope() int {
	b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope")
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}
