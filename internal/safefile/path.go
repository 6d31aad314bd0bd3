package safefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Path-level helpers, for callers that keep paths rather than a Dir. Each
// resolves the parent directory by the rule and acts relative to it.

// inDir opens the parent of path and returns it with the base name.
func inDir(path string) (*Dir, string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", err
	}
	d, err := OpenDir(filepath.Dir(abs))
	if err != nil {
		return nil, "", err
	}
	return d, filepath.Base(abs), nil
}

// OpenFile is os.OpenFile by the rule: with O_CREATE|O_EXCL the file is
// created as by Dir.Create, with O_CREATE alone as by Dir.Ensure (an
// existing file keeps its contents and is given perm), without O_CREATE it
// is opened as by Dir.Open.
func OpenFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	d, name, err := inDir(path)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	switch {
	case flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return d.Create(name, flag&^(os.O_CREATE|os.O_EXCL), perm)
	case flag&os.O_CREATE != 0:
		f, _, err := d.Ensure(name, perm)
		if err == nil && flag&os.O_TRUNC != 0 {
			err = f.Truncate(0)
		}
		return f, err
	default:
		return d.Open(name, flag)
	}
}

// ReadFile reads a file opened as by Dir.Open.
func ReadFile(path string) ([]byte, error) {
	f, err := OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// Remove removes a file as by Dir.Remove.
func Remove(path string) error {
	d, name, err := inDir(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Remove(name)
}

// RemoveDir removes an empty directory obs-agent owns.
func RemoveDir(path string) error {
	d, name, err := inDir(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.RemoveDir(name)
}

// Rename renames within one directory, as by Dir.Rename.
func Rename(oldPath, newPath string) error {
	od, oname, err := inDir(oldPath)
	if err != nil {
		return err
	}
	defer od.Close()
	nabs, err := filepath.Abs(newPath)
	if err != nil {
		return err
	}
	if filepath.Dir(nabs) != filepath.Dir(filepath.Join(od.path, oname)) {
		if nd, nname, err := inDir(newPath); err == nil {
			defer nd.Close()
			if nd.st.Dev == od.st.Dev && nd.st.Ino == od.st.Ino {
				return od.Rename(oname, nname)
			}
		}
		return fmt.Errorf("rename %s to %s: not in one directory", oldPath, newPath)
	}
	return od.Rename(oname, filepath.Base(nabs))
}

// Truncate cuts a file, opened as by Dir.Open, to size.
func Truncate(path string, size int64) error {
	f, err := OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(size)
}

// ReadDir lists a directory reached by the rule.
func ReadDir(path string) ([]fs.DirEntry, error) {
	d, err := OpenDir(path)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.ReadDir()
}

// WriteFileAtomic replaces path with data, as by Dir.WriteFileAtomic. The
// directory must exist.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	d, name, err := inDir(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.WriteFileAtomic(name, data, perm)
}
