package hooks

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string // substrings of the error
	}{
		{"not json", `{"hooks":`, []string{"site.json", "unexpected EOF"}},
		{"unknown top-level field", `{"hooks": {}, "ociVersion": "1.0"}`,
			[]string{"site.json", `unknown field "ociVersion"`}},
		{"trailing data", `{"hooks": {}} {}`, []string{"site.json", "after the JSON object"}},
		{"unknown event", `{"hooks": {"precheckpiont": []}}`,
			[]string{"site.json", `unknown event "precheckpiont"`, "valid: precheckpoint, postcheckpoint, prerestore, postrestore"}},
		{"event not a list", `{"hooks": {"postrestore": {"path": "/bin/true"}}}`,
			[]string{"site.json: postrestore: want a list of hooks"}},
		{"unknown field", `{"hooks": {"precheckpoint": [{"path": "/bin/true"}, {"path": "/bin/true", "timeuot": 3}]}}`,
			[]string{"site.json: precheckpoint[1]", `unknown field "timeuot"`, "valid fields: path, args, env, timeout, container"}},
		{"missing path", `{"hooks": {"postcheckpoint": [{"args": ["x"]}]}}`,
			[]string{"site.json: postcheckpoint[0]: path is missing"}},
		{"relative path", `{"hooks": {"postcheckpoint": [{"path": "bin/flush"}]}}`,
			[]string{"site.json: postcheckpoint[0]", `path "bin/flush" is not absolute`}},
		{"zero timeout", `{"hooks": {"prerestore": [{"path": "/bin/true", "timeout": 0}]}}`,
			[]string{"site.json: prerestore[0]", "timeout 0", "> 0"}},
		{"negative timeout", `{"hooks": {"prerestore": [{"path": "/bin/true", "timeout": -5}]}}`,
			[]string{"prerestore[0]", "timeout -5"}},
		{"timeout not a number", `{"hooks": {"prerestore": [{"path": "/bin/true", "timeout": "10s"}]}}`,
			[]string{"prerestore[0]", "cannot unmarshal string"}},
		{"bad env", `{"hooks": {"postrestore": [{"path": "/bin/true", "env": ["NOEQUALS"]}]}}`,
			[]string{"postrestore[0]", `env entry "NOEQUALS"`}},
		{"container prerestore", `{"hooks": {"prerestore": [{"path": "/bin/true", "container": true}]}}`,
			[]string{"site.json: prerestore[0]", "container: true is not possible for prerestore", "use postrestore"}},
		{"every problem reported", `{"hooks": {"bogus": [], "precheckpoint": [{"path": "a"}, {"path": "/b", "timeout": 0}]}}`,
			[]string{`unknown event "bogus"`, "precheckpoint[0]", "precheckpoint[1]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.file), "site.json")
			if err == nil {
				t.Fatalf("Parse succeeded with %+v, want an error", c)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParse(t *testing.T) {
	c, err := Parse([]byte(`{"hooks": {
		"precheckpoint": [
			{"path": "/bin/a", "args": ["a", "-x"], "env": ["K=V"], "timeout": 5},
			{"path": "/bin/b"}
		],
		"postrestore": [{"path": "/app/c", "container": true}],
		"postcheckpoint": null
	}}`), "image:/etc/hooks.json")
	if err != nil {
		t.Fatal(err)
	}
	five := 5
	want := &Config{
		Precheckpoint: []Hook{
			{Hook: hookSpec("/bin/a", []string{"a", "-x"}, []string{"K=V"}, &five), Source: "image:/etc/hooks.json"},
			{Hook: hookSpec("/bin/b", []string{"/bin/b"}, nil, nil), Source: "image:/etc/hooks.json"},
		},
		Postrestore: []Hook{
			{Hook: hookSpec("/app/c", []string{"/app/c"}, nil, nil), Container: true, Source: "image:/etc/hooks.json"},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse = %+v\nwant %+v", c, want)
	}
	if got := c.Precheckpoint[0].timeout().Seconds(); got != 5 {
		t.Errorf("timeout = %vs, want 5s", got)
	}
	if got := c.Precheckpoint[1].timeout(); got != DefaultTimeout {
		t.Errorf("timeout = %v, want the default %v", got, DefaultTimeout)
	}
	if c.Len() != 3 || len(c.For(Prerestore)) != 0 || len(c.For("bogus")) != 0 {
		t.Errorf("Len = %d, For(prerestore) = %v, For(bogus) = %v", c.Len(), c.For(Prerestore), c.For("bogus"))
	}
}

// writeFile writes a file under dir and returns its path.
func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// paths returns the path and source of each hook, for comparisons.
func paths(hooks []Hook) []string {
	var out []string
	for _, h := range hooks {
		out = append(out, h.Path+"@"+filepath.Base(h.Source))
	}
	return out
}

func TestLoadOrder(t *testing.T) {
	dir := t.TempDir()
	site := writeFile(t, dir, "site.json", `{"hooks": {
		"precheckpoint": [{"path": "/site/1"}, {"path": "/site/2"}],
		"postrestore": [{"path": "/site/r"}]}}`, 0o644)
	user := writeFile(t, dir, "user.json", `{"hooks": {
		"precheckpoint": [{"path": "/user/1"}, {"path": "/user/2"}],
		"postcheckpoint": [{"path": "/user/p"}]}}`, 0o644)
	c, err := LoadFiles(site, user, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		event Event
		want  []string
	}{
		{Precheckpoint, []string{"/site/1@site.json", "/site/2@site.json", "/user/1@user.json", "/user/2@user.json"}},
		{Postcheckpoint, []string{"/user/p@user.json"}},
		{Prerestore, nil},
		{Postrestore, []string{"/site/r@site.json"}},
	} {
		if got := paths(c.For(tt.event)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.event, got, tt.want)
		}
	}
}

func TestLoadSources(t *testing.T) {
	dir := t.TempDir()
	site := writeFile(t, dir, "site.json", `{"hooks": {"precheckpoint": [{"path": "/site/1"}]}}`, 0o644)
	user := writeFile(t, dir, "user.json", `{"hooks": {"precheckpoint": [{"path": "/user/1"}]}}`, 0o644)
	bad := writeFile(t, dir, "bad.json", `{"hooks": {"precheckpoint": [{"path": "rel"}]}}`, 0o644)
	missing := filepath.Join(dir, "missing.json")

	tests := []struct {
		name    string
		env     *string // $CKPT_APPTAINER_HOOKS; nil: unset
		user    string
		want    []string
		wantErr []string
	}{
		{name: "env replaces the default", env: &site, user: user,
			want: []string{"/site/1@site.json", "/user/1@user.json"}},
		{name: "env set and empty: no site file", env: new(""), user: user,
			want: []string{"/user/1@user.json"}},
		{name: "env names a missing file", env: &missing,
			wantErr: []string{"site hooks", "missing.json", "no such file"}},
		{name: "missing user file", env: new(""), user: missing,
			wantErr: []string{"user hooks", "missing.json", "no such file"}},
		{name: "bad site file", env: &bad,
			wantErr: []string{"site hooks", "bad.json: precheckpoint[0]", "not absolute"}},
		{name: "no files at all", env: new("")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(SiteFileEnv, "")
			if tt.env == nil {
				os.Unsetenv(SiteFileEnv)
			} else {
				os.Setenv(SiteFileEnv, *tt.env)
			}
			c, err := Load(tt.user)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Load succeeded with %v, want an error", paths(c.For(Precheckpoint)))
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := paths(c.For(Precheckpoint)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("precheckpoint hooks %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLoadMissingSiteFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.json")
	if c, err := LoadFiles(missing, "", false); err != nil || c.Len() != 0 {
		t.Errorf("optional missing site file: %v, %d hooks; want no error, no hooks", err, c.Len())
	}
	if _, err := LoadFiles(missing, "", true); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("required missing site file: error %v, want one matching fs.ErrNotExist", err)
	}
	// The default site file, when the machine has none.
	if _, err := os.Stat(DefaultSiteFile); errors.Is(err, fs.ErrNotExist) {
		t.Setenv(SiteFileEnv, "")
		os.Unsetenv(SiteFileEnv)
		if c, err := Load(""); err != nil || c.Len() != 0 {
			t.Errorf("Load with no %s: %v, %d hooks; want no error, no hooks", DefaultSiteFile, err, c.Len())
		}
	}
}

// hookSpec builds a runtime-spec hook.
func hookSpec(path string, args, env []string, timeout *int) specs.Hook {
	return specs.Hook{Path: path, Args: args, Env: env, Timeout: timeout}
}

// TestParseFileRefusesWhatOthersCanChange: a hooks file others may write
// would run their commands as the job's user.
func TestParseFileRefusesWhatOthersCanChange(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "hooks.json")
	if err := os.WriteFile(p, []byte(`{"hooks": {}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseFile(p); err != nil {
		t.Fatalf("own file refused: %v", err)
	}
	if err := os.Chmod(p, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseFile(p); err == nil || !strings.Contains(err.Error(), "others can write it") {
		t.Fatalf("world-writable file: err = %v", err)
	}
	t.Setenv(SiteFileEnv, p)
	if _, err := Load(""); err == nil || !strings.Contains(err.Error(), "site hooks") {
		t.Fatalf("world-writable site file through $%s: err = %v", SiteFileEnv, err)
	}
}
