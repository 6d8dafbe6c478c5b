package image

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// A restart reads only what the generation's manifest vouches for: the
// manifest carries its own checksum, every data file it names is in its
// list of files (whose sizes and checksums Verify checks), and every file
// is opened by a plain name inside the generation directory, never through
// a symbolic link. What the files hold is checked by the engine before it
// starts anything.

// manifestSum is the SHA-256 of m encoded as compact JSON with its own
// checksum field empty.
func manifestSum(m *Manifest) (string, error) {
	c := *m
	c.ManifestSHA256 = ""
	b, err := json.Marshal(&c)
	if err != nil {
		return "", fmt.Errorf("encode manifest: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// checkManifestSum refuses a manifest whose checksum does not match, or a
// version 2 manifest without one.
func checkManifestSum(m *Manifest) error {
	if m.ManifestSHA256 == "" {
		if m.FormatVersion >= 2 {
			return errors.New("no manifest_sha256: the manifest was changed after it was written")
		}
		return nil // version 1 manifests carry none
	}
	want, err := manifestSum(m)
	if err != nil {
		return err
	}
	if want != m.ManifestSHA256 {
		return errors.New("manifest_sha256 does not match: the manifest is corrupt or was changed after it was written")
	}
	return nil
}

// checkFileRefs checks the file list (valid names, each once) and the
// names of the data files the manifest refers to elsewhere. Whether those
// are in the list is Verify's to say (checkListed): a generation missing a
// file can still be inspected.
func checkFileRefs(m *Manifest) error {
	seen := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		if err := checkName(f.Name); err != nil {
			return err
		}
		if seen[f.Name] {
			return fmt.Errorf("lists %s twice", f.Name)
		}
		if f.Size < 0 {
			return fmt.Errorf("%s has size %d", f.Name, f.Size)
		}
		seen[f.Name] = true
	}
	return eachRef(m, func(what, name string) error {
		if err := checkName(name); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
}

// checkListed checks that every data file the manifest refers to is in its
// file list, and so verified.
func checkListed(m *Manifest) error {
	seen := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		seen[f.Name] = true
	}
	return eachRef(m, func(what, name string) error {
		if !seen[name] {
			return fmt.Errorf("%s names %s, which the file list does not have", what, name)
		}
		return nil
	})
}

// eachRef calls fn for every data file the manifest names outside its file
// list, and checks that each process appears once.
func eachRef(m *Manifest, fn func(what, name string) error) error {
	pids := map[int]bool{}
	for i, p := range m.Processes {
		if pids[p.PID] {
			return fmt.Errorf("processes[%d]: pid %d appears twice", i, p.PID)
		}
		pids[p.PID] = true
		if err := fn(fmt.Sprintf("processes[%d].core", i), p.Core); err != nil {
			return err
		}
		if p.Pages != "" {
			if err := fn(fmt.Sprintf("processes[%d].pages", i), p.Pages); err != nil {
				return err
			}
		}
		if p.Runs != "" {
			if err := fn(fmt.Sprintf("processes[%d].runs", i), p.Runs); err != nil {
				return err
			}
		}
	}
	if m.IPC != nil {
		for i, s := range m.IPC.Shm {
			if err := fn(fmt.Sprintf("ipc.shm[%d].data", i), s.Data); err != nil {
				return err
			}
		}
	}
	for i, lf := range m.LocalFiles {
		if err := fn(fmt.Sprintf("local_files[%d].data", i), lf.Data); err != nil {
			return err
		}
		if !strings.HasPrefix(lf.File.Path, "/") || strings.Contains(lf.File.Path, "/../") || strings.HasSuffix(lf.File.Path, "/..") {
			return fmt.Errorf("local_files[%d]: path %q is not a clean absolute path", i, lf.File.Path)
		}
	}
	return nil
}

// Lists reports whether the manifest lists data file name.
func (g *Generation) Lists(name string) bool {
	_, ok := g.Sum(name)
	return ok
}

// Open opens data file name of the generation for reading. Only a file the
// manifest lists is opened, by its plain name inside the generation
// directory and never through a symbolic link.
func (g *Generation) Open(name string) (*os.File, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("generation %d: %w", g.Gen, err)
	}
	if g.Manifest != nil && !g.Lists(name) {
		return nil, fmt.Errorf("generation %d: %s is not in the manifest's file list", g.Gen, name)
	}
	f, err := os.OpenFile(g.Path(name), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("generation %d: %w", g.Gen, err)
	}
	return f, nil
}
