package apptainer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// NewRecord builds the container record of a job started as cmd, with
// environment env in working directory dir. It resolves the image and the
// bind sources against dir, checks that the image is a SIF or squashfs
// file, and fills the image's size, mtime and digest (hashed once per
// version of the file, see DigestCache). Namespaces, Mounts, RuntimePID
// and InnerPIDNamespace are the engine's to fill from the running job.
func NewRecord(cmd *Command, env []string, dir string) (*image.Container, error) {
	if cmd == nil {
		return nil, errors.New("container record: no command")
	}
	rec := &image.Container{
		Runtime:    cmd.Runtime,
		Argv:       append([]string(nil), cmd.Argv...),
		Env:        append([]string(nil), env...),
		Dir:        dir,
		Subcommand: cmd.Subcommand,
		Instance:   cmd.Instance,
		ImageArg:   cmd.ImageArg,
	}
	var err error
	if rec.Version, err = RuntimeVersion(cmd.Argv[0], env, dir); err != nil {
		return nil, err
	}
	path := absPath(cmd.Image, dir)
	if err := checkImageFile(path); err != nil {
		return nil, err
	}
	if rec.Image, err = Digests.Image(path); err != nil {
		return nil, err
	}
	for _, b := range cmd.Binds {
		b.Source = absPath(b.Source, dir)
		rec.Binds = append(rec.Binds, b)
	}
	return rec, nil
}

// absPath resolves p against dir, without following symlinks: the record
// keeps the path the user named, which is the one to tell them about.
func absPath(p, dir string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}

// Image file signatures: a SIF file has "SIF_MAGIC" after its 32-byte
// launch line, a squashfs file starts with "hsqs".
var (
	sifMagic      = []byte("SIF_MAGIC")
	sifMagicAt    = 32
	squashfsMagic = []byte("hsqs")
)

// checkImageFile refuses an image that is not a regular SIF or squashfs
// file: a sandbox directory is changed in place by the job (or anyone),
// so a restart could not know it got the same container.
func checkImageFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("container image: %w", err)
	}
	if fi.IsDir() {
		return fmt.Errorf("container image %s is a sandbox directory and %w: %s", path, ErrUnsupported, imageFileAdvice)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("container image %s is not a regular file and %w: %s", path, ErrUnsupported, imageFileAdvice)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("container image: %w", err)
	}
	defer f.Close()
	head := make([]byte, sifMagicAt+len(sifMagic))
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("container image %s: %w", path, err)
	}
	head = head[:n]
	if bytes.HasPrefix(head, squashfsMagic) || (n == len(head) && n >= sifMagicAt+len(sifMagic) && bytes.Equal(head[sifMagicAt:], sifMagic)) {
		return nil
	}
	return fmt.Errorf("container image %s is neither a SIF nor a squashfs file and %w: %s", path, ErrUnsupported, imageFileAdvice)
}

// versionCache holds `RUNTIME --version` per resolved runtime path: the
// supervisor records a container at every checkpoint.
var versionCache = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

// versionTimeout bounds `apptainer --version`, which reads a config file
// and nothing else; a hung one must not hold up a checkpoint.
const versionTimeout = 30 * time.Second

// RuntimeVersion returns the `--version` output of the runtime argv0 as the
// job would find it (through PATH in env when argv0 has no slash).
func RuntimeVersion(argv0 string, env []string, dir string) (string, error) {
	path, err := lookRuntime(argv0, env, dir)
	if err != nil {
		return "", err
	}
	versionCache.Lock()
	defer versionCache.Unlock()
	if v, ok := versionCache.m[path]; ok {
		return v, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), versionTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", path, err)
	}
	v := strings.TrimSpace(string(out))
	versionCache.m[path] = v
	logrus.Debugf("container runtime %s: %s", path, v)
	return v, nil
}

// lookRuntime finds the runtime executable as the job's exec would.
func lookRuntime(argv0 string, env []string, dir string) (string, error) {
	if strings.Contains(argv0, "/") {
		return absPath(argv0, dir), nil
	}
	pathVar, ok := lookupEnv(env, "PATH")
	if !ok {
		pathVar = os.Getenv("PATH")
	}
	for _, d := range filepath.SplitList(pathVar) {
		if d == "" {
			d = "."
		}
		p := absPath(filepath.Join(d, argv0), dir)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("container runtime %s: not found in PATH %q", argv0, pathVar)
}
