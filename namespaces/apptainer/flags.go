package apptainer

// scope is the set of subcommands an option belongs to.
type scope uint8

const (
	scExec scope = 1 << iota
	scRun
	scShell
	scInstance

	// scActions are the subcommands that run a command in a new container.
	scActions = scExec | scRun | scShell
	// scAll adds `instance start`.
	scAll = scActions | scInstance
)

// flagSpec describes one Apptainer option: its long name, its one-letter
// short name (0 when none), whether it takes a value, and where it is
// accepted. Parse must know which options take a value, since otherwise
// it cannot tell an option's value from the image argument.
type flagSpec struct {
	long  string
	short byte
	value bool
	scope scope
}

// globalFlags are the options of the apptainer command itself, accepted
// only before the subcommand (apptainer 1.4: `apptainer exec -q` is an
// error, and exec's -c is --contain, not --config).
var globalFlags = []flagSpec{
	{"build-config", 0, false, scAll},
	{"config", 'c', true, scAll},
	{"debug", 'd', false, scAll},
	{"nocolor", 0, false, scAll},
	{"quiet", 'q', false, scAll},
	{"silent", 's', false, scAll},
	{"verbose", 'v', false, scAll},
}

// actionFlags are the options of exec, run, shell and instance start as
// apptainer 1.4.5 prints them with --help, plus the hidden ones it still
// accepts (pwd, containlibs, tmpdir, no-nv, no-rocm, nohttps, docker
// credentials, ignore-*).
var actionFlags = []flagSpec{
	{"add-caps", 0, true, scAll},
	{"allow-setuid", 0, false, scAll},
	{"app", 0, true, scAll},
	{"apply-cgroups", 0, true, scAll},
	{"authfile", 0, true, scAll},
	{"bind", 'B', true, scAll},
	{"blkio-weight", 0, true, scAll},
	{"blkio-weight-device", 0, true, scAll},
	{"cleanenv", 'e', false, scAll},
	{"compat", 0, false, scAll},
	{"contain", 'c', false, scAll},
	{"containall", 'C', false, scAll},
	{"containlibs", 0, true, scAll},
	{"cpu-shares", 0, true, scAll},
	{"cpus", 0, true, scAll},
	{"cpuset-cpus", 0, true, scAll},
	{"cpuset-mems", 0, true, scAll},
	{"cwd", 0, true, scActions},
	{"disable-cache", 0, false, scAll},
	{"dns", 0, true, scAll},
	{"docker-host", 0, true, scAll},
	{"docker-login", 0, false, scAll},
	{"docker-password", 0, true, scAll},
	{"docker-username", 0, true, scAll},
	{"drop-caps", 0, true, scAll},
	{"env", 0, true, scAll},
	{"env-file", 0, true, scAll},
	{"fakeroot", 'f', false, scAll},
	{"fusemount", 0, true, scAll},
	{"help", 'h', false, scAll},
	{"home", 'H', true, scAll},
	{"hostname", 0, true, scAll},
	{"ignore-fakeroot-command", 0, false, scAll},
	{"ignore-subuid", 0, false, scAll},
	{"ignore-userns", 0, false, scAll},
	{"ipc", 'i', false, scAll},
	{"keep-privs", 0, false, scAll},
	{"memory", 0, true, scAll},
	{"memory-reservation", 0, true, scAll},
	{"memory-swap", 0, true, scAll},
	{"mount", 0, true, scAll},
	{"net", 'n', false, scAll},
	{"netns-path", 0, true, scAll},
	{"network", 0, true, scAll},
	{"network-args", 0, true, scAll},
	{"no-eval", 0, false, scAll},
	{"no-home", 0, false, scAll},
	{"no-https", 0, false, scAll},
	{"nohttps", 0, false, scAll},
	{"no-init", 0, false, scAll},
	{"no-mount", 0, true, scAll},
	{"no-nv", 0, false, scAll},
	{"no-pid", 0, false, scActions},
	{"no-privs", 0, false, scAll},
	{"no-rocm", 0, false, scAll},
	{"no-umask", 0, false, scAll},
	{"nv", 0, false, scAll},
	{"nvccli", 0, false, scAll},
	{"oom-kill-disable", 0, false, scAll},
	{"overlay", 'o', true, scAll},
	{"passphrase", 0, false, scAll},
	{"pem-path", 0, true, scAll},
	{"pid", 'p', false, scActions},
	{"pids-limit", 0, true, scAll},
	{"pwd", 0, true, scActions},
	{"rocm", 0, false, scAll},
	{"scratch", 'S', true, scAll},
	{"security", 0, true, scAll},
	{"sharens", 0, false, scActions},
	{"tmpdir", 0, true, scAll},
	{"underlay", 0, false, scAll},
	{"unsquash", 0, false, scAll},
	{"userns", 'u', false, scAll},
	{"uts", 0, false, scAll},
	{"workdir", 'W', true, scAll},
	{"writable", 'w', false, scAll},
	{"writable-tmpfs", 0, false, scAll},

	// Options of one subcommand only. RestartArgv drops them when it turns
	// run or shell into exec, which would refuse them.
	{"runscript-timeout", 0, true, scRun},
	{"shell", 's', true, scShell},
	{"syos", 0, false, scShell},
	{"boot", 0, false, scInstance},
	{"dmtcp-launch", 0, true, scInstance},
	{"dmtcp-restart", 0, true, scInstance},
	{"pid-file", 0, true, scInstance},
}

// lookupLong finds the option named long in table for subcommand scope sc.
func lookupLong(table []flagSpec, long string, sc scope) (flagSpec, bool) {
	for _, f := range table {
		if f.long == long && f.scope&sc != 0 {
			return f, true
		}
	}
	return flagSpec{}, false
}

// lookupShort finds the option with short name c in table for scope sc.
func lookupShort(table []flagSpec, c byte, sc scope) (flagSpec, bool) {
	for _, f := range table {
		if f.short == c && f.scope&sc != 0 {
			return f, true
		}
	}
	return flagSpec{}, false
}
