package apptainer

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name       string
		argv       string
		env        []string
		sub        string
		imageArg   int
		instance   string
		args       []string
		binds      []image.Bind
		pidNS      bool
		optionsHas []string
	}{
		{name: "plain exec", argv: "apptainer exec img.sif python3 train.py",
			sub: Exec, imageArg: 2, args: []string{"python3", "train.py"}},
		{name: "singularity by path", argv: "/usr/bin/singularity exec /data/img.sif ./a.out -n 4",
			sub: Exec, imageArg: 2, args: []string{"./a.out", "-n", "4"}},
		{name: "global options", argv: "apptainer -q --nocolor -c /etc/apptainer/apptainer.conf -d exec img.sif ls",
			sub: Exec, imageArg: 7, args: []string{"ls"}, optionsHas: []string{"quiet", "nocolor", "config", "debug"}},
		{name: "global -s is silent, shell -s is the shell", argv: "apptainer -s shell -s /bin/zsh img.sif",
			sub: Shell, imageArg: 5, args: []string{}, optionsHas: []string{"silent", "shell"}},
		{name: "bind forms", argv: "apptainer exec -B /scratch --bind /a:/b:ro,/c:/d --bind=/e:/f -B/g img.sif app",
			sub: Exec, imageArg: 8, args: []string{"app"}, binds: []image.Bind{
				{Source: "/scratch", Destination: "/scratch"},
				{Source: "/a", Destination: "/b", Options: "ro"},
				{Source: "/c", Destination: "/d"},
				{Source: "/e", Destination: "/f"},
				{Source: "/g", Destination: "/g"},
			}},
		{name: "bind with image-src option", argv: "apptainer exec --bind data.img:/data:image-src=/sub,ro img.sif app",
			sub: Exec, imageArg: 4, args: []string{"app"}, binds: []image.Bind{
				{Source: "data.img", Destination: "/data", Options: "image-src=/sub,ro"},
			}},
		{name: "mount", argv: "apptainer run --mount type=bind,source=/opt,destination=/hostopt,ro img.sif",
			sub: Run, imageArg: 4, args: []string{}, binds: []image.Bind{
				{Source: "/opt", Destination: "/hostopt", Options: "ro"},
			}},
		{name: "bind env", argv: "apptainer exec img.sif app",
			env: []string{"APPTAINER_BIND=/x,/y:/z", "SINGULARITY_BINDPATH=/w"},
			sub: Exec, imageArg: 2, args: []string{"app"}, binds: []image.Bind{
				{Source: "/x", Destination: "/x"},
				{Source: "/y", Destination: "/z"},
				{Source: "/w", Destination: "/w"},
			}},
		{name: "apptainer bind env wins over singularity's", argv: "apptainer exec img.sif app",
			env: []string{"SINGULARITY_BIND=/old", "APPTAINER_BIND=/new"},
			sub: Exec, imageArg: 2, args: []string{"app"}, binds: []image.Bind{{Source: "/new", Destination: "/new"}}},
		{name: "home", argv: "apptainer exec -H /scratch/me:/home/me img.sif app",
			sub: Exec, imageArg: 4, args: []string{"app"}, binds: []image.Bind{
				{Source: "/scratch/me", Destination: "/home/me", Options: "home"},
			}},
		{name: "nv", argv: "apptainer exec --nv img.sif python3 train.py",
			sub: Exec, imageArg: 3, args: []string{"python3", "train.py"}, optionsHas: []string{"nv"}},
		{name: "nv env", argv: "apptainer exec img.sif app", env: []string{"SINGULARITY_NV=1"},
			sub: Exec, imageArg: 2, args: []string{"app"}, optionsHas: []string{"nv"}},
		{name: "grouped short booleans", argv: "apptainer exec -ec img.sif env",
			sub: Exec, imageArg: 3, args: []string{"env"}, optionsHas: []string{"cleanenv", "contain"}},
		{name: "grouped with value", argv: "apptainer exec -eB/a:/b img.sif app",
			sub: Exec, imageArg: 3, args: []string{"app"}, binds: []image.Bind{{Source: "/a", Destination: "/b"}}},
		{name: "containall gives a pid namespace", argv: "apptainer exec --containall --cleanenv img.sif app",
			sub: Exec, imageArg: 4, args: []string{"app"}, pidNS: true},
		{name: "pid short", argv: "apptainer exec -p img.sif app", sub: Exec, imageArg: 3, args: []string{"app"}, pidNS: true},
		{name: "pid from env", argv: "apptainer exec img.sif app", env: []string{"APPTAINER_UNSHARE_PID=1"},
			sub: Exec, imageArg: 2, args: []string{"app"}, pidNS: true},
		{name: "no-pid wins", argv: "apptainer exec --containall --no-pid img.sif app",
			sub: Exec, imageArg: 4, args: []string{"app"}, pidNS: false},
		{name: "pid=false", argv: "apptainer exec --pid=false img.sif app",
			sub: Exec, imageArg: 3, args: []string{"app"}, pidNS: false},
		{name: "double dash before image", argv: "apptainer exec --cleanenv -- img.sif app",
			sub: Exec, imageArg: 4, args: []string{"app"}},
		{name: "options after the image belong to the app", argv: "apptainer exec img.sif mpirun --bind-to core ./a",
			sub: Exec, imageArg: 2, args: []string{"mpirun", "--bind-to", "core", "./a"}},
		{name: "value options", argv: "apptainer exec --env A=1 --env-file e --cwd /w --app foo --hostname h -W /tmp/w --memory 1G --cpus 2 img.sif app",
			sub: Exec, imageArg: 18, args: []string{"app"}, optionsHas: []string{"env", "env-file", "cwd", "app", "hostname", "workdir", "memory", "cpus"}},
		{name: "writable overlay read-only", argv: "apptainer exec --overlay extra.img:ro img.sif app",
			sub: Exec, imageArg: 4, args: []string{"app"}},
		{name: "scratch with workdir", argv: "apptainer exec -W /tmp/w -S /scratch img.sif app",
			sub: Exec, imageArg: 6, args: []string{"app"}},
		{name: "run with args", argv: "apptainer --nocolor run --cleanenv img.sif --epochs 10",
			sub: Run, imageArg: 4, args: []string{"--epochs", "10"}},
		{name: "run runscript-timeout", argv: "apptainer run --runscript-timeout 5m img.sif",
			sub: Run, imageArg: 4, args: []string{}},
		{name: "instance start", argv: "apptainer instance start --bind /d img.sif web --port 80",
			sub: InstanceStart, imageArg: 5, instance: "web", args: []string{"--port", "80"},
			binds: []image.Bind{{Source: "/d", Destination: "/d"}}},
		{name: "instance start pid-file", argv: "singularity instance start --pid-file /tmp/p img.sif db",
			sub: InstanceStart, imageArg: 5, instance: "db", args: []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv := strings.Fields(tt.argv)
			c, err := Parse(argv, tt.env)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if c.Subcommand != tt.sub || c.ImageArg != tt.imageArg || c.Image != argv[tt.imageArg] || c.Instance != tt.instance {
				t.Errorf("got subcommand %q image %d (%q) instance %q, want %q %d %q", c.Subcommand, c.ImageArg, c.Image, c.Instance, tt.sub, tt.imageArg, tt.instance)
			}
			if len(c.Args) != len(tt.args) || (len(tt.args) > 0 && !reflect.DeepEqual(c.Args, tt.args)) {
				t.Errorf("args %q, want %q", c.Args, tt.args)
			}
			if !reflect.DeepEqual(c.Binds, tt.binds) {
				t.Errorf("binds %+v, want %+v", c.Binds, tt.binds)
			}
			if c.PIDNamespace != tt.pidNS {
				t.Errorf("PIDNamespace %v, want %v", c.PIDNamespace, tt.pidNS)
			}
			for _, name := range tt.optionsHas {
				if len(c.values(name)) == 0 {
					t.Errorf("option %s not found in %+v", name, c.Options)
				}
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct {
		name string
		argv string
		env  []string
		// notApptainer wants ErrNotApptainer, else ErrUnsupported when
		// unsupported is set, else any error.
		notApptainer bool
		unsupported  bool
		want         string
	}{
		{name: "plain program", argv: "./a.out -n 4", notApptainer: true},
		{name: "python", argv: "python3 apptainer.py", notApptainer: true},
		{name: "empty", argv: "", notApptainer: true},
		{name: "lookalike", argv: "/opt/apptainer-wrapper exec img.sif app", notApptainer: true},
		{name: "exec instance", argv: "apptainer exec instance://web ps", unsupported: true, want: "launch the instance itself"},
		{name: "docker image", argv: "apptainer exec docker://ubuntu:22.04 ls", unsupported: true, want: "apptainer build"},
		{name: "library image", argv: "apptainer run library://alpine", unsupported: true, want: "only SIF/squashfs image files"},
		{name: "oras image", argv: "singularity exec oras://ghcr.io/x/y:1 ls", unsupported: true, want: "only SIF/squashfs"},
		{name: "docker-daemon image", argv: "apptainer exec docker-daemon:ubuntu:latest ls", unsupported: true, want: "only SIF/squashfs"},
		{name: "fakeroot", argv: "apptainer exec --fakeroot img.sif app", unsupported: true, want: "--fakeroot"},
		{name: "fakeroot short grouped", argv: "apptainer exec -ef img.sif app", unsupported: true, want: "--fakeroot"},
		{name: "fakeroot env", argv: "apptainer exec img.sif app", env: []string{"APPTAINER_FAKEROOT=true"}, unsupported: true, want: "--fakeroot"},
		{name: "writable", argv: "apptainer exec -w img.sif app", unsupported: true, want: "rolled back"},
		{name: "writable-tmpfs", argv: "apptainer exec --writable-tmpfs img.sif app", unsupported: true, want: "lost"},
		{name: "compat", argv: "apptainer exec --compat img.sif app", unsupported: true, want: "--writable-tmpfs"},
		{name: "nvccli", argv: "apptainer exec --nvccli img.sif python3 train.py", unsupported: true, want: "--nv"},
		{name: "nvccli env", argv: "apptainer exec img.sif app", env: []string{"APPTAINER_NVCCLI=1"}, unsupported: true, want: "--nv"},
		{name: "rocm", argv: "apptainer exec --rocm img.sif app", unsupported: true, want: "AMD GPU state"},
		{name: "fusemount", argv: "apptainer exec --fusemount container:sshfs\\ h:/\\ /m img.sif app", unsupported: true, want: "FUSE"},
		{name: "net", argv: "apptainer exec --net --network none img.sif app", unsupported: true, want: "network"},
		{name: "writable overlay", argv: "apptainer exec --overlay ov.img img.sif app", unsupported: true, want: "overlay"},
		{name: "scratch without workdir", argv: "apptainer exec -S /s img.sif app", unsupported: true, want: "--workdir"},
		{name: "passphrase", argv: "apptainer exec --passphrase enc.sif app", unsupported: true, want: "--pem-path"},
		{name: "dmtcp", argv: "apptainer instance start --dmtcp-launch ck img.sif x", unsupported: true, want: "DMTCP"},
		{name: "sharens", argv: "apptainer exec --sharens img.sif app", unsupported: true, want: "shared"},
		{name: "build", argv: "apptainer build x.sif def", unsupported: true, want: "only exec, run, shell and instance start"},
		{name: "instance stop", argv: "apptainer instance stop web", unsupported: true, want: "instance start"},
		{name: "help", argv: "apptainer exec --help", want: "no image"},
		{name: "help with image", argv: "apptainer run --help img.sif", unsupported: true, want: "--help"},
		{name: "version", argv: "apptainer --version", want: "unknown option"},
		{name: "no subcommand", argv: "apptainer -d", unsupported: true, want: "no subcommand"},
		{name: "unknown option", argv: "apptainer exec --frobnicate img.sif app", want: "unknown option --frobnicate"},
		{name: "unknown short", argv: "apptainer exec -Z img.sif app", want: "unknown option -Z"},
		{name: "exec without command", argv: "apptainer exec img.sif", want: "no command"},
		{name: "value at end", argv: "apptainer exec --bind", want: "needs a value"},
		{name: "instance without name", argv: "apptainer instance start img.sif", want: "no instance name"},
		{name: "global option after subcommand", argv: "apptainer exec -q img.sif app", want: "unknown option -q"},
		{name: "shell option on exec", argv: "apptainer exec --shell /bin/zsh img.sif app", want: "unknown option --shell"},
		{name: "pid on instance start", argv: "apptainer instance start --pid img.sif x", want: "unknown option --pid"},
		{name: "mount not bind", argv: "apptainer exec --mount type=tmpfs,destination=/t img.sif app", unsupported: true, want: "type=bind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv := splitArgs(tt.argv)
			c, err := Parse(argv, tt.env)
			if err == nil {
				t.Fatalf("Parse accepted %q: %+v", tt.argv, c)
			}
			if tt.notApptainer != errors.Is(err, ErrNotApptainer) {
				t.Fatalf("error %v: ErrNotApptainer %v, want %v", err, errors.Is(err, ErrNotApptainer), tt.notApptainer)
			}
			if tt.unsupported != errors.Is(err, ErrUnsupported) {
				t.Errorf("error %v: ErrUnsupported %v, want %v", err, errors.Is(err, ErrUnsupported), tt.unsupported)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

// splitArgs splits a command line at spaces, except those escaped with a
// backslash.
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	esc := false
	for _, r := range s {
		switch {
		case esc:
			cur.WriteRune(r)
			esc = false
		case r == '\\':
			esc = true
		case r == ' ':
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}
