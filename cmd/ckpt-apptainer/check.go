package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/cgroup"
	"github.com/ckpt-apptainer/ckpt-apptainer/cmd/ckpt-apptainer/supervisor"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/namespaces"
)

// checkReport is what `check` finds: the kernel's features and what the
// node allows an unprivileged job.
type checkReport struct {
	Kernel     string         `json:"kernel"`
	Arch       string         `json:"arch"`
	CapLastCap int            `json:"cap_last_cap"`
	Disabled   string         `json:"disabled,omitempty"` // $CKPT_APPTAINER_DISABLE
	Features   []checkFeature `json:"features"`
	Node       []checkItem    `json:"node"`
	// Checkpointable says a job launched here can be checkpointed;
	// Degradations what it loses here, when anything.
	Checkpointable bool     `json:"checkpointable"`
	Degradations   []string `json:"degradations,omitempty"`
}

// checkFeature is one kernel feature: its probe and its description.
type checkFeature struct {
	kernel.Status
	What     string `json:"what"`
	Since    string `json:"since"`
	Without  string `json:"without"`
	Degrades bool   `json:"degrades"`
}

// checkItem is one thing the node must allow.
type checkItem struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	// Required items make a job impossible to checkpoint when not OK;
	// the others only matter to some jobs (Apptainer's).
	Required bool `json:"required"`
}

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "say what this node's kernel supports and whether a job launched here can be checkpointed",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			rep, err := buildCheckReport()
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else if err := printCheckReport(os.Stdout, rep); err != nil {
				return err
			}
			if !rep.Checkpointable {
				return supervisor.ExitStatus(1)
			}
			return nil
		},
	}
}

// buildCheckReport probes the kernel and tries what a job needs.
func buildCheckReport() (*checkReport, error) {
	set, err := kernel.Probe()
	if err != nil {
		return nil, err
	}
	rep := &checkReport{Kernel: set.Release, Arch: runtime.GOARCH, CapLastCap: set.LastCap,
		Disabled: os.Getenv(kernel.EnvDisable)}
	for _, info := range kernel.Infos() {
		st := set.Status(info.Name)
		rep.Features = append(rep.Features, checkFeature{Status: st, What: info.What, Since: info.Since,
			Without: info.Without, Degrades: info.Degrades})
		if !st.Available && info.Degrades {
			rep.Degradations = append(rep.Degradations, fmt.Sprintf("%s: %s", info.Name, info.Without))
		}
	}
	rep.Node = append(rep.Node, checkSandboxItem(), checkPtraceItem(set), checkCgroupItem(set),
		checkPIDsItem(set), checkFuseItem(), checkApptainerItem(), checkNetworkItem())
	rep.Checkpointable = true
	for _, it := range rep.Node {
		if it.Required && !it.OK {
			rep.Checkpointable = false
		}
	}
	return rep, nil
}

func checkSandboxItem() checkItem {
	it := checkItem{Name: "user namespaces", Required: true}
	if err := namespaces.CheckSandbox(); err != nil {
		it.Detail = err.Error()
		return it
	}
	it.OK, it.Detail = true, "a job sandbox (user, PID and mount namespaces) can be created"
	return it
}

func checkPtraceItem(set *kernel.Set) checkItem {
	it := checkItem{Name: "ptrace", Required: true}
	scope := namespaces.PtraceScope()
	switch {
	case scope == 3:
		it.Detail = "kernel.yama.ptrace_scope is 3: ptrace is off on this node"
	case scope == 2 && os.Geteuid() != 0:
		it.Detail = "kernel.yama.ptrace_scope is 2: only administrators may ptrace"
	case strings.Contains(set.Status(kernel.PtraceSyscallInfo).Detail, "PTRACE_SEIZE"):
		// The probes stop a child of their own: this failing means no
		// job can be stopped either.
		it.Detail = set.Status(kernel.PtraceSyscallInfo).Detail
	default:
		it.OK = true
		it.Detail = "the supervisor can stop the job's processes"
		if scope >= 0 {
			it.Detail += fmt.Sprintf(" (kernel.yama.ptrace_scope %d)", scope)
		}
	}
	return it
}

// checkCgroupItem makes and removes a job cgroup where launch would.
// Without one, checkpoints still work, with ptrace alone.
func checkCgroupItem(set *kernel.Set) checkItem {
	it := checkItem{Name: "job cgroup", OK: true}
	cg, err := cgroup.Create(cgroup.Options{Name: fmt.Sprintf("%scheck-%d", supervisor.JobCgroupPrefix, os.Getpid())})
	switch {
	case errors.Is(err, cgroup.ErrNoWritableCgroup):
		it.Detail = fmt.Sprintf("%v: checkpoints stop the job with ptrace alone", err)
		return it
	case err != nil:
		it.Detail = fmt.Sprintf("%v: checkpoints stop the job with ptrace alone", err)
		return it
	}
	defer cg.Remove()
	if cg.CanFreeze() {
		it.Detail = fmt.Sprintf("cgroup %s under %s: checkpoints freeze the job", cg.Version(), parentDir(cg.Path()))
	} else {
		it.Detail = fmt.Sprintf("cgroup %s under %s without a freezer (%s): checkpoints stop the job with ptrace alone",
			cg.Version(), parentDir(cg.Path()), set.Why(kernel.CgroupV2Freezer))
	}
	return it
}

func parentDir(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return p
}

// checkPIDsItem says whether a restart can give processes their PIDs.
func checkPIDsItem(set *kernel.Set) checkItem {
	it := checkItem{Name: "restore PIDs", Required: true, OK: true}
	switch {
	case set.Has(kernel.Clone3SetTID):
		it.Detail = "clone3 with set_tid"
	case set.Has(kernel.NSLastPID):
		it.Detail = "through /proc/sys/kernel/ns_last_pid"
	default:
		it.OK = false
		it.Detail = fmt.Sprintf("neither clone3 set_tid (%s) nor ns_last_pid (%s)",
			set.Why(kernel.Clone3SetTID), set.Why(kernel.NSLastPID))
	}
	return it
}

func checkFuseItem() checkItem {
	it := checkItem{Name: "/dev/fuse"}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		it.Detail = fmt.Sprintf("%v: unprivileged Apptainer cannot mount SIF images (plain jobs are not affected)", unwrapPathError(err))
		return it
	}
	f.Close()
	it.OK, it.Detail = true, "usable: unprivileged Apptainer can mount SIF images"
	return it
}

// checkNetworkItem says what --net private gives a job here.
func checkNetworkItem() checkItem {
	it := checkItem{Name: "private network"}
	name, path, err := namespaces.UserNetStack()
	switch {
	case err != nil:
		it.Detail = err.Error()
		return it
	case path == "" && name == "none":
		it.Detail = "--net private: loopback only (" + namespaces.UserNetEnv + "=none)"
		return it
	case path == "":
		it.Detail = "--net private: loopback only, no way out (install pasta, package passt, or slirp4netns)"
		return it
	}
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		it.Detail = fmt.Sprintf("--net private: %s cannot give the job a way out: %v (it needs /dev/net/tun read-write)", name, unwrapPathError(err))
		return it
	}
	f.Close()
	it.OK, it.Detail = true, fmt.Sprintf("--net private: loopback and %s (%s)", name, path)
	return it
}

func checkApptainerItem() checkItem {
	it := checkItem{Name: "apptainer"}
	path, err := exec.LookPath("apptainer")
	if err != nil {
		it.Detail = "not in PATH: container jobs need it (plain jobs do not)"
		return it
	}
	it.OK, it.Detail = true, path
	if out, err := exec.Command(path, "--version").Output(); err == nil {
		it.Detail += " (" + strings.TrimSpace(string(out)) + ")"
	}
	return it
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		if pe.Err == unix.ENOENT {
			return errors.New("no /dev/fuse")
		}
		return pe.Err
	}
	return err
}

// printCheckReport writes the report for people.
func printCheckReport(w io.Writer, rep *checkReport) error {
	fmt.Fprintf(w, "kernel %s (%s), cap_last_cap %d\n", rep.Kernel, rep.Arch, rep.CapLastCap)
	if rep.Disabled != "" {
		fmt.Fprintf(w, "%s=%s\n", kernel.EnvDisable, rep.Disabled)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FEATURE\tHERE\tSINCE\tWITHOUT IT")
	for _, f := range rep.Features {
		state := "yes"
		switch {
		case f.Disabled:
			state = "off"
		case !f.Available:
			state = "no"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Name, state, f.Since, f.Without)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var missing []string
	for _, f := range rep.Features {
		if !f.Available && !f.Disabled && f.Detail != "" {
			missing = append(missing, fmt.Sprintf("  %s: %s", f.Name, f.Detail))
		}
	}
	if len(missing) > 0 {
		fmt.Fprintf(w, "\nwhat the probes saw:\n%s\n", strings.Join(missing, "\n"))
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, it := range rep.Node {
		state := "ok"
		if !it.OK {
			state = "NO"
			if !it.Required {
				state = "no"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", it.Name, state, it.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	switch {
	case !rep.Checkpointable:
		fmt.Fprintln(w, "a job launched here cannot be checkpointed: see the NO lines above")
	case len(rep.Degradations) > 0:
		fmt.Fprintln(w, "a job launched here can be checkpointed, and loses this here:")
		for _, d := range rep.Degradations {
			fmt.Fprintf(w, "  %s\n", d)
		}
	default:
		fmt.Fprintln(w, "a job launched here can be checkpointed")
	}
	return nil
}
