package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// defaultImageDir is where scripts/build-test-images.sh puts the container
// images it builds; CKPT_TEST_IMAGE_DIR moves it, for the script and for
// the tests alike.
const defaultImageDir = "/var/lib/ckpt-apptainer-test"

// imageDir is the directory of the prebuilt container test images.
func imageDir() string {
	if d := os.Getenv("CKPT_TEST_IMAGE_DIR"); d != "" {
		return d
	}
	return defaultImageDir
}

// pythonImage returns the Debian SIF with python3 that
// scripts/build-test-images.sh builds once per machine. Building it takes
// a debootstrap, too slow to do per test run, so a missing image skips the
// test (fails with CKPT_REQUIRE_APPTAINER or CI) and names the script.
func pythonImage(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("apptainer"); err != nil {
		requireApptainer(t, "apptainer not installed (scripts/install-deps.sh)")
	}
	sif := filepath.Join(imageDir(), "python3.sif")
	fi, err := os.Stat(sif)
	if os.IsNotExist(err) {
		requireApptainer(t, "%s missing: build it as root with scripts/build-test-images.sh (scripts/setup-test-env.sh runs it)", sif)
	}
	if err != nil {
		t.Fatalf("python3 test image: %v", err)
	}
	// The unprivileged flavor runs it as the test user.
	if fi.Mode().Perm()&0o004 == 0 {
		t.Fatalf("python3 test image %s is mode %v, not world-readable: rebuild it with scripts/build-test-images.sh --force", sif, fi.Mode().Perm())
	}
	return sif
}

// privateImage copies the image src to rel in the job's directory, owned by
// the job's user, for a test that moves or changes the image under the job.
func (j *job) privateImage(src, rel string) string {
	j.t.Helper()
	dst := j.path(rel)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		j.t.Fatal(err)
	}
	if err := copyFile(src, dst, 0o644); err != nil {
		j.t.Fatalf("copy the test image: %v", err)
	}
	j.chown(filepath.Dir(dst), dst)
	return dst
}

// chown hands paths to the job's user in the unprivileged flavor.
func (j *job) chown(paths ...string) {
	j.t.Helper()
	if !j.fl.user {
		return
	}
	for _, p := range paths {
		if err := os.Chown(p, j.env.uid, j.env.gid); err != nil {
			j.t.Fatal(err)
		}
	}
}

// fileDigest returns "sha256:<hex>" of the file's contents, the form the
// checkpoint records an image's digest in.
func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("digest %s: %w", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// changeImage replaces the image at path by a copy with one byte appended,
// keeping the original aside under path+".orig" with its inode and mtime,
// and returns a function that puts the original back exactly as it was.
func (j *job) changeImage(path string) (restore func()) {
	j.t.Helper()
	orig := path + ".orig"
	if err := os.Rename(path, orig); err != nil {
		j.t.Fatal(err)
	}
	b, err := os.ReadFile(orig)
	if err != nil {
		j.t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, 0), 0o644); err != nil {
		j.t.Fatal(err)
	}
	j.chown(path)
	return func() {
		j.t.Helper()
		// A rename keeps the mtime; a copy back would not, and the image
		// would look changed although its contents are the original ones.
		if err := os.Rename(orig, path); err != nil {
			j.t.Fatal(err)
		}
	}
}
