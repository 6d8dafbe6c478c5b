package supervisor

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestSettingsReused: the settings a job was supervised with come back at
// a restart for every flag the restart does not give, and the restart
// says which it took.
func TestSettingsReused(t *testing.T) {
	launched := Options{
		Interval: 5 * time.Minute, Keep: 3, Incremental: true, Compress: "zstd",
		Signal: "USR1", Hooks: "hooks.json", Requeue: true, LocalLimit: "2GiB",
		DumpBuffer: 128, GPULockTimeout: 45 * time.Second,
		// Not settings: these belong to one restart.
		Image: "/old.sif", Strict: true, Force: true,
	}
	b, err := encodeSettings(launched)
	if err != nil {
		t.Fatal(err)
	}
	hooks, _ := filepath.Abs("hooks.json")
	defaults := Options{Keep: 2, Compress: "none", LocalLimit: "1GiB", DumpBuffer: -1, GPULockTimeout: 30 * time.Second}
	for _, c := range []struct {
		name     string
		restart  Options
		want     Options
		changed  []string
		errorHas string
	}{
		{
			name:    "all from the record",
			restart: defaults,
			want: Options{Interval: 5 * time.Minute, Keep: 3, Incremental: true, Compress: "zstd", Signal: "USR1",
				Hooks: hooks, Requeue: true, LocalLimit: "2GiB", DumpBuffer: 128, GPULockTimeout: 45 * time.Second},
			changed: []string{"--interval 5m0s", "--keep 3", "--incremental", "--compress zstd", "--signal USR1",
				"--hooks " + hooks, "--requeue", "--local-limit 2GiB", "--dump-buffer 128", "--gpu-lock-timeout 45s"},
		},
		{
			name: "flags given win",
			restart: func() Options {
				o := defaults
				o.Interval, o.Keep, o.Requeue = time.Minute, 2, false
				o.Explicit = map[string]bool{"interval": true, "keep": true, "requeue": true}
				return o
			}(),
			want: Options{Interval: time.Minute, Keep: 2, Incremental: true, Compress: "zstd", Signal: "USR1",
				Hooks: hooks, LocalLimit: "2GiB", DumpBuffer: 128, GPULockTimeout: 45 * time.Second},
			changed: []string{"--incremental", "--compress zstd", "--signal USR1", "--hooks " + hooks,
				"--local-limit 2GiB", "--dump-buffer 128", "--gpu-lock-timeout 45s"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := c.restart
			changed, err := applySettings(&o, b)
			if err != nil {
				t.Fatal(err)
			}
			o.Explicit = nil
			if !reflect.DeepEqual(o, c.want) {
				t.Errorf("restart options\n%+v, want\n%+v", o, c.want)
			}
			if !reflect.DeepEqual(changed, c.changed) {
				t.Errorf("reported %q, want %q", changed, c.changed)
			}
		})
	}
}

// TestSettingsDamaged: a settings file that cannot be read is an error
// naming the setting, not a restart with half of them.
func TestSettingsDamaged(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{`{"interval": "soon"}`, "interval"},
		{`{"keep": "three"}`, "keep"},
		{`not json`, "settings.json"},
	} {
		var o Options
		_, err := applySettings(&o, []byte(c.file))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error naming %q", c.file, err, c.want)
		}
	}
}

// TestShellQuote: a recorded path with spaces prints as one word.
func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"USR1":           "USR1",
		"/a/b-c.json":    "/a/b-c.json",
		"/my dir/h.json": "'/my dir/h.json'",
		"it's":           `'it'\''s'`,
		"":               "''",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
