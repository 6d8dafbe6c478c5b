package apptainer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// MismatchError is Verify's refusal: every difference between the
// recorded container and what a restart would get, and what to do.
type MismatchError struct {
	Problems []string
	Advice   []string
}

// Error lists the problems, one a line, then the advice.
func (e *MismatchError) Error() string {
	var b strings.Builder
	b.WriteString("the container changed since the checkpoint:")
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p)
	}
	if len(e.Advice) > 0 {
		b.WriteString("\n")
		b.WriteString(strings.Join(e.Advice, "; "))
	}
	return b.String()
}

// Verify checks, before a restart, that the container recorded in rec can
// be built again: the image (at imagePath, or at the recorded path when
// imagePath is "") is the same file, and every bind source still exists.
// Size and mtime are compared first; only when they differ is the image
// hashed, and then a changed mtime with the same digest is accepted. The
// error is a *MismatchError listing each difference, old against new.
func Verify(rec *image.Container, imagePath string) error {
	if rec == nil {
		return errors.New("verify container: no container record")
	}
	e := &MismatchError{}
	path := imagePath
	if path == "" {
		path = rec.Image.Path
	}
	if p := checkImageVersion(rec.Image, path); p != "" {
		e.Problems = append(e.Problems, p)
		if imagePath == "" {
			e.Advice = append(e.Advice, fmt.Sprintf("put the original image back at %s, or name the moved image with `ckpt-apptainer restart --image PATH`", rec.Image.Path))
		} else {
			e.Advice = append(e.Advice, fmt.Sprintf("name the image the job ran with (%s) with `ckpt-apptainer restart --image PATH`", describeImage(rec.Image)))
		}
	}
	missing := false
	for _, b := range rec.Binds {
		if _, err := os.Stat(b.Source); err != nil {
			missing = true
			if errors.Is(err, fs.ErrNotExist) {
				e.Problems = append(e.Problems, fmt.Sprintf("bind source %s (bound at %s) no longer exists", b.Source, b.Destination))
			} else {
				e.Problems = append(e.Problems, fmt.Sprintf("bind source %s (bound at %s): %v", b.Source, b.Destination, err))
			}
		}
	}
	if missing {
		e.Advice = append(e.Advice, "re-create the missing bind sources (with the files the job had open in them) before restarting")
	}
	if len(e.Problems) > 0 {
		return e
	}
	return nil
}

// checkImageVersion compares the image at path with the recorded one and
// returns the difference, or "" when it is the same image.
func checkImageVersion(want image.ContainerImage, path string) string {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("image %s is missing (the checkpoint used %s)", path, describeImage(want))
	}
	if err != nil {
		return fmt.Sprintf("image %s: %v", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Sprintf("image %s is not a regular file any more (the checkpoint used %s)", path, describeImage(want))
	}
	if fi.Size() == want.Size && fi.ModTime().Equal(want.MTime) {
		return ""
	}
	got, err := Digests.Image(path)
	if err != nil {
		return fmt.Sprintf("image %s: %v", path, err)
	}
	if got.Digest == want.Digest {
		logrus.Infof("container image %s was touched (mtime %s, was %s) but its contents are the same", path, fmtTime(got.MTime), fmtTime(want.MTime))
		return ""
	}
	var diffs []string
	if got.Size != want.Size {
		diffs = append(diffs, fmt.Sprintf("size %d -> %d", want.Size, got.Size))
	}
	if !got.MTime.Equal(want.MTime) {
		diffs = append(diffs, fmt.Sprintf("mtime %s -> %s", fmtTime(want.MTime), fmtTime(got.MTime)))
	}
	diffs = append(diffs, fmt.Sprintf("digest %s -> %s", want.Digest, got.Digest))
	return fmt.Sprintf("image %s is not the one the checkpoint used: %s", path, strings.Join(diffs, ", "))
}

// describeImage names a recorded image for a message.
func describeImage(img image.ContainerImage) string {
	return fmt.Sprintf("%s, %d bytes, mtime %s, %s", img.Path, img.Size, fmtTime(img.MTime), img.Digest)
}

// fmtTime prints a file time to the nanosecond, which is what tells two
// versions of a file apart.
func fmtTime(t time.Time) string {
	return t.Local().Format("2006-01-02 15:04:05.000000000 MST")
}
