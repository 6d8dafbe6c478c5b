package apptainer

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

func TestRestartArgv(t *testing.T) {
	stub := []string{"/proc/self/fd/7"}
	tests := []struct {
		name      string
		argv      string
		env       []string
		imagePath string
		want      string
		err       string
	}{
		{name: "exec keeps everything but the command",
			argv: "apptainer exec --cleanenv -B /a:/b img.sif python3 train.py --lr 0.1",
			want: "apptainer exec --cleanenv -B /a:/b img.sif /proc/self/fd/7"},
		{name: "moved image",
			argv: "apptainer exec img.sif app", imagePath: "/new/place/img.sif",
			want: "apptainer exec /new/place/img.sif /proc/self/fd/7"},
		{name: "global options stay",
			argv: "/usr/bin/apptainer -q -c /etc/a.conf exec --containall img.sif app",
			want: "/usr/bin/apptainer -q -c /etc/a.conf exec --containall img.sif /proc/self/fd/7"},
		{name: "run becomes exec",
			argv: "apptainer run --bind=/data img.sif --epochs 3",
			want: "apptainer exec --bind=/data img.sif /proc/self/fd/7"},
		{name: "run drops runscript-timeout",
			argv: "apptainer run --runscript-timeout 5m --app train img.sif",
			want: "apptainer exec --app train img.sif /proc/self/fd/7"},
		{name: "shell becomes exec and drops --shell",
			argv: "singularity -s shell -s /bin/zsh -e img.sif",
			want: "singularity -s exec -e img.sif /proc/self/fd/7"},
		{name: "shell drops --shell=",
			argv: "apptainer shell --shell=/bin/zsh img.sif",
			want: "apptainer exec img.sif /proc/self/fd/7"},
		{name: "double dash stays",
			argv: "apptainer exec -- img.sif app",
			want: "apptainer exec -- img.sif /proc/self/fd/7"},
		{name: "image that looks like an option",
			argv: "apptainer exec -- img.sif app", imagePath: "-odd.sif",
			want: "apptainer exec -- ./-odd.sif /proc/self/fd/7"},
		{name: "grouped shell option", argv: "apptainer shell -es /bin/zsh img.sif", err: "grouped"},
		{name: "now refused", argv: "apptainer exec img.sif app", env: []string{"APPTAINER_ROCM=1"}, err: "AMD GPU"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv := strings.Fields(tt.argv)
			rec := &image.Container{Argv: argv, Env: tt.env, ImageArg: -1}
			if c, err := Parse(argv, nil); err == nil {
				rec.ImageArg = c.ImageArg
			}
			got, err := RestartArgv(rec, tt.imagePath, stub)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %q, %v; want error mentioning %q", got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.Fields(tt.want); !reflect.DeepEqual(got, want) {
				t.Errorf("got  %q\nwant %q", got, want)
			}
			if !reflect.DeepEqual(rec.Argv, argv) {
				t.Errorf("the record's argv was changed: %q", rec.Argv)
			}
			// What RestartArgv returns must itself be a command line
			// that can be checkpointed again.
			c, err := Parse(got, tt.env)
			if err != nil {
				t.Fatalf("restart command line does not parse: %v", err)
			}
			if c.Subcommand != Exec || !reflect.DeepEqual(c.Args, stub) {
				t.Errorf("restart command line parses as %s %q", c.Subcommand, c.Args)
			}
		})
	}
}

func TestRestartArgvInstance(t *testing.T) {
	const stub = "/ckpt/instance-stub"
	tests := []struct {
		name, argv, imagePath, stub, want, err string
	}{
		{name: "startscript replaced",
			argv: "apptainer instance start img.sif web",
			want: "apptainer instance start --bind " + stub + ":/.singularity.d/startscript:ro img.sif web"},
		{name: "options stay, startscript arguments go",
			argv: "apptainer -q instance start --containall -B /data img.sif web --port 8080",
			want: "apptainer -q instance start --bind " + stub + ":/.singularity.d/startscript:ro --containall -B /data img.sif web"},
		{name: "moved image",
			argv: "apptainer instance start img.sif web", imagePath: "/new/img.sif",
			want: "apptainer instance start --bind " + stub + ":/.singularity.d/startscript:ro /new/img.sif web"},
		{name: "relative stub", argv: "apptainer instance start img.sif web", stub: "stub", err: "absolute path"},
		{name: "descriptor path", argv: "apptainer instance start img.sif web", stub: "/proc/self/fd/63", err: "/proc/self"},
		{name: "stub path with a colon", argv: "apptainer instance start img.sif web", stub: "/a:b/stub", err: "':'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv := strings.Fields(tt.argv)
			c, err := Parse(argv, nil)
			if err != nil {
				t.Fatal(err)
			}
			rec := &image.Container{Argv: argv, ImageArg: c.ImageArg}
			s := tt.stub
			if s == "" {
				s = stub
			}
			got, err := RestartArgv(rec, tt.imagePath, []string{s})
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %q, %v; want error mentioning %q", got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.Fields(tt.want); !reflect.DeepEqual(got, want) {
				t.Errorf("got  %q\nwant %q", got, want)
			}
			again, err := Parse(got, nil)
			if err != nil {
				t.Fatalf("restart command line does not parse: %v", err)
			}
			if again.Subcommand != InstanceStart || again.Instance != "web" || len(again.Args) != 0 {
				t.Errorf("restart command line parses as %s %q %q", again.Subcommand, again.Instance, again.Args)
			}
		})
	}
}

func TestRestartArgvChecksRecord(t *testing.T) {
	rec := &image.Container{Argv: []string{"apptainer", "exec", "img.sif", "app"}, ImageArg: 3}
	if _, err := RestartArgv(rec, "", []string{"stub"}); err == nil || !strings.Contains(err.Error(), "argument 3") {
		t.Errorf("inconsistent record: %v", err)
	}
	rec.ImageArg = 2
	if _, err := RestartArgv(rec, "", nil); err == nil {
		t.Error("no command accepted")
	}
	rec.Argv = []string{"./app"}
	if _, err := RestartArgv(rec, "", []string{"stub"}); !errors.Is(err, ErrNotApptainer) {
		t.Errorf("plain job: %v", err)
	}
}
