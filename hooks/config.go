package hooks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/safepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Event names a point in a job's life at which hooks run.
type Event string

// The events, in the order a checkpoint and a restart reach them.
const (
	// Precheckpoint runs before the job is stopped for a checkpoint.
	Precheckpoint Event = "precheckpoint"
	// Postcheckpoint runs after a checkpoint attempt whose precheckpoint
	// hooks were started (State.Error says whether it was committed).
	Postcheckpoint Event = "postcheckpoint"
	// Prerestore runs before any process of the job is restored.
	Prerestore Event = "prerestore"
	// Postrestore runs after a successful restore, once the job runs.
	Postrestore Event = "postrestore"
)

// Events lists every event, in the order a checkpoint and a restart reach
// them; it is also the order of the keys of a hooks file.
var Events = []Event{Precheckpoint, Postcheckpoint, Prerestore, Postrestore}

// Valid reports whether e is one of Events.
func (e Event) Valid() bool {
	for _, v := range Events {
		if e == v {
			return true
		}
	}
	return false
}

// StopsOnFailure reports whether Run stops at the first failing hook of
// e. Precheckpoint and prerestore do: their failure must abort the
// checkpoint or restore. Postcheckpoint and postrestore run every hook and
// report all failures, which the caller turns into warnings.
func (e Event) StopsOnFailure() bool {
	return e == Precheckpoint || e == Prerestore
}

// Where hook configuration comes from.
const (
	// DefaultSiteFile is the site hooks file read when $CKPT_APPTAINER_HOOKS
	// is not set. It may be missing.
	DefaultSiteFile = "/etc/ckpt-apptainer/hooks.json"
	// SiteFileEnv names the environment variable that replaces
	// DefaultSiteFile. Set and empty, it means no site file; set to a path,
	// that file must exist.
	SiteFileEnv = "CKPT_APPTAINER_HOOKS"
)

// DefaultTimeout bounds a hook whose entry gives no timeout. It is long
// enough to flush or stage a modest file and short enough that a hung
// hook cannot eat a preemption grace time on its own.
const DefaultTimeout = 60 * time.Second

// Hook is one hook entry: a runtime-spec Hook (path, args, env, timeout in
// seconds) plus where it runs and where it came from.
type Hook struct {
	specs.Hook
	// Container asks for the hook to run inside the namespaces, root and
	// working directory of the job's application; Path is then a path
	// inside the container. Refused for prerestore.
	Container bool `json:"container,omitempty"`
	// Source is the file the entry came from (or what the caller of
	// Parse named); it is not part of the file format.
	Source string `json:"-"`
}

// Name is the short name of h used in log lines: the base name of its path.
func (h Hook) Name() string { return filepath.Base(h.Path) }

// timeout is how long h may run on its own: its entry's timeout, else
// DefaultTimeout.
func (h Hook) timeout() time.Duration {
	if h.Timeout != nil {
		return time.Duration(*h.Timeout) * time.Second
	}
	return DefaultTimeout
}

// Config holds the hooks of each event, in the order they run.
type Config struct {
	Precheckpoint  []Hook `json:"precheckpoint,omitempty"`
	Postcheckpoint []Hook `json:"postcheckpoint,omitempty"`
	Prerestore     []Hook `json:"prerestore,omitempty"`
	Postrestore    []Hook `json:"postrestore,omitempty"`
}

// list returns the slice of c that holds the hooks of e; nil for an
// unknown event.
func (c *Config) list(e Event) *[]Hook {
	switch e {
	case Precheckpoint:
		return &c.Precheckpoint
	case Postcheckpoint:
		return &c.Postcheckpoint
	case Prerestore:
		return &c.Prerestore
	case Postrestore:
		return &c.Postrestore
	}
	return nil
}

// For returns the hooks of e in the order they run; nil for none or an
// unknown event. A nil Config has no hooks.
func (c *Config) For(e Event) []Hook {
	if c == nil {
		return nil
	}
	if l := c.list(e); l != nil {
		return *l
	}
	return nil
}

// Append adds the hooks of other after those of c, event by event, so
// that other's hooks run after c's.
func (c *Config) Append(other *Config) {
	if other == nil {
		return
	}
	for _, e := range Events {
		l := c.list(e)
		*l = append(*l, other.For(e)...)
	}
}

// Len is the number of hooks of every event together.
func (c *Config) Len() int {
	n := 0
	for _, e := range Events {
		n += len(c.For(e))
	}
	return n
}

// Load reads the site hooks file and then userFile (the --hooks option;
// empty for none). The site file is $CKPT_APPTAINER_HOOKS when that is set
// (empty: no site file), else DefaultSiteFile, which may be missing.
func Load(userFile string) (*Config, error) {
	site, required := os.LookupEnv(SiteFileEnv)
	if !required {
		site = DefaultSiteFile
	}
	return LoadFiles(site, userFile, required)
}

// LoadFiles reads the site file and then the user file, so that the site's
// hooks of each event run before the user's. An empty path is skipped. A
// missing site file is an error only when siteRequired; a missing user
// file always is.
func LoadFiles(site, user string, siteRequired bool) (*Config, error) {
	c := &Config{}
	if site != "" {
		sc, err := ParseFile(site)
		switch {
		case errors.Is(err, fs.ErrNotExist) && !siteRequired:
		case err != nil:
			return nil, fmt.Errorf("site hooks: %w", err)
		default:
			c.Append(sc)
		}
	}
	if user != "" {
		uc, err := ParseFile(user)
		if err != nil {
			return nil, fmt.Errorf("user hooks: %w", err)
		}
		c.Append(uc)
	}
	return c, nil
}

// ParseFile reads and checks one hooks file. Its hooks get the path as
// Source. A missing file gives an error that matches fs.ErrNotExist. A file
// that another user could change (its owner, its mode, a directory above
// it or a symbolic link on the way) is refused: its hooks run as the job's
// user.
func ParseFile(path string) (*Config, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	if err := safepath.Check(path, "hooks file"); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// Parse decodes and checks a hooks file held in data, e.g. one shipped
// inside a container image; source names it in errors and becomes the
// Source of its hooks. Decoding is strict: unknown fields, unknown events
// and trailing data are errors. Every problem found is reported, joined.
func Parse(data []byte, source string) (*Config, error) {
	var file struct {
		Hooks map[string]json.RawMessage `json:"hooks"`
	}
	if err := decodeStrict(data, &file); err != nil {
		return nil, fmt.Errorf("%s: %w (a hooks file is {\"hooks\": {EVENT: [HOOK...]}})", source, err)
	}
	c := &Config{}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(file.Hooks)) {
		if !Event(name).Valid() {
			errs = append(errs, fmt.Errorf("%s: unknown event %q (valid: %s)", source, name, eventNames()))
		}
	}
	for _, e := range Events {
		raw, ok := file.Hooks[string(e)]
		if !ok {
			continue
		}
		hooks, err := parseEvent(e, raw, source)
		errs = append(errs, err...)
		*c.list(e) = hooks
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// parseEvent decodes and checks the entries of one event.
func parseEvent(e Event, raw json.RawMessage, source string) ([]Hook, []error) {
	var entries []json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, []error{fmt.Errorf("%s: %s: want a list of hooks: %w", source, e, err)}
	}
	var hooks []Hook
	var errs []error
	for i, entry := range entries {
		var h Hook
		if err := decodeStrict(entry, &h); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s[%d]: %w (valid fields: path, args, env, timeout, container)", source, e, i, err))
			continue
		}
		if err := check(e, &h); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s[%d]: %w", source, e, i, err))
			continue
		}
		h.Source = source
		hooks = append(hooks, h)
	}
	return hooks, errs
}

// check validates h as an entry of e and fills in args when empty.
func check(e Event, h *Hook) error {
	if h.Path == "" {
		return errors.New("path is missing")
	}
	if !filepath.IsAbs(h.Path) {
		return fmt.Errorf("path %q is not absolute", h.Path)
	}
	if h.Timeout != nil && *h.Timeout <= 0 {
		return fmt.Errorf("timeout %d: must be a number of seconds > 0 (omit it for the default of %d)", *h.Timeout, int(DefaultTimeout/time.Second))
	}
	for _, kv := range h.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("env entry %q: want KEY=VALUE", kv)
		}
	}
	if h.Container && e == Prerestore {
		return errors.New("container: true is not possible for prerestore: no process of the job runs yet to enter (use postrestore)")
	}
	if len(h.Args) == 0 {
		h.Args = []string{h.Path}
	}
	return nil
}

// decodeStrict decodes exactly one JSON value from data into v, refusing
// unknown fields and anything after the value.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}

// eventNames lists the valid events for error messages.
func eventNames() string {
	names := make([]string, len(Events))
	for i, e := range Events {
		names[i] = string(e)
	}
	return strings.Join(names, ", ")
}
