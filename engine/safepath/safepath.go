package safepath

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Check refuses path when someone other than the caller and root could
// change what it leads to: the file itself (owned by another user, or
// writable by group or others), a directory above it (another user's, or
// writable by others without the sticky bit, which keeps them from renaming
// or removing the caller's entries), or a symbolic link on the way that
// another user owns. what names the path in the error ("hooks file").
func Check(path, what string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	uid, gid := uint32(os.Geteuid()), uint32(os.Getegid())
	trusted := func(st *unix.Stat_t) bool { return st.Uid == uid || st.Uid == 0 }
	// Walk the components as the kernel would, following links.
	todo := strings.Split(strings.TrimPrefix(abs, "/"), "/")
	cur := "/"
	for hops := 0; len(todo) > 0; {
		name := todo[0]
		todo = todo[1:]
		if name == "" || name == "." {
			continue
		}
		if name == ".." {
			cur = filepath.Dir(cur)
			continue
		}
		var dir unix.Stat_t
		if err := unix.Stat(cur, &dir); err != nil {
			return fmt.Errorf("%s %s: %w", what, path, err)
		}
		if !trusted(&dir) || othersWrite(&dir, gid) {
			return fmt.Errorf("%s %s: directory %s (uid %d, gid %d, mode %04o) can be changed by another user, who could rename what is in it: refused. Use a directory only you can write, or make this one sticky (chmod +t)",
				what, path, cur, dir.Uid, dir.Gid, dir.Mode&0o7777)
		}
		next := filepath.Join(cur, name)
		var st unix.Stat_t
		if err := unix.Lstat(next, &st); err != nil {
			return fmt.Errorf("%s %s: %w", what, path, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			if !trusted(&st) {
				return fmt.Errorf("%s %s: symbolic link %s belongs to uid %d, not to you: refused", what, path, next, st.Uid)
			}
			if hops++; hops > 40 {
				return fmt.Errorf("%s %s: too many symbolic links", what, path)
			}
			target, err := os.Readlink(next)
			if err != nil {
				return fmt.Errorf("%s %s: %w", what, path, err)
			}
			if filepath.IsAbs(target) {
				cur = "/"
			}
			todo = append(strings.Split(strings.TrimPrefix(target, "/"), "/"), todo...)
			continue
		}
		cur = next
	}
	var st unix.Stat_t
	if err := unix.Stat(cur, &st); err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	if !trusted(&st) {
		return fmt.Errorf("%s %s belongs to uid %d, not to you or root: refused", what, path, st.Uid)
	}
	if st.Mode&0o022 != 0 && st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Mode&0o002 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return fmt.Errorf("%s %s has mode %04o: others can write it: refused (chmod go-w %s)", what, path, st.Mode&0o7777, path)
	}
	return nil
}

// othersWrite reports whether users other than the owner may rename
// entries of dir: it is writable by all, or by a group other than the
// caller's own (primary) group, and not sticky.
func othersWrite(dir *unix.Stat_t, gid uint32) bool {
	if dir.Mode&unix.S_ISVTX != 0 {
		return false
	}
	return dir.Mode&0o002 != 0 || dir.Mode&0o020 != 0 && dir.Gid != gid
}
