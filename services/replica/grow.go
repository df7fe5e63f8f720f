package replica

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// GrowStore grows a closed copy to size bytes. The new blocks read as
// zeroes on both copies, so they are in sync without a copy: their
// checksums are the zero entries and their bitmap bits are clear.
//
// Order makes it crash-safe: the new metadata is written beside the old
// one, then the data grows, then the new metadata replaces the old. A
// crash in between leaves the old metadata and a grown data file, which
// OpenStore finishes (finishGrow).
func GrowStore(dataPath, metaPath string, size int64) error {
	if size <= 0 || size%BlockSize != 0 {
		return fmt.Errorf("grow to %d bytes: not a positive multiple of %d", size, BlockSize)
	}
	meta, err := os.Open(metaPath)
	if err != nil {
		return fmt.Errorf("grow volume: %w", err)
	}
	defer meta.Close()
	h, err := readHeader(meta)
	if err != nil {
		return fmt.Errorf("grow %s: %w", metaPath, err)
	}
	if size < h.Size {
		return fmt.Errorf("grow %s from %d to %d bytes: volumes do not shrink", dataPath, h.Size, size)
	}
	if size == h.Size {
		return nil
	}
	data, err := os.OpenFile(dataPath, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("grow volume data: %w", err)
	}
	defer data.Close()
	st, err := data.Stat()
	if err != nil {
		return fmt.Errorf("grow volume data: %w", err)
	}
	if !st.Mode().IsRegular() {
		if n, err := deviceSize(data); err != nil || n < size {
			return fmt.Errorf("grow volume on %s: device of %d bytes, need %d: %w", dataPath, n, size, errors.Join(err, ErrWrongSize))
		}
	} else if st.Size() != h.Size {
		return fmt.Errorf("%s is %d bytes, its metadata says %d: %w", dataPath, st.Size(), h.Size, ErrWrongSize)
	}

	_, _, oil, ool, ocl := metaLayout(h.Size)
	_, _, il, ol, cl := metaLayout(size)
	tmp := metaPath + ".grow"
	nm, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("grow volume metadata: %w", err)
	}
	defer nm.Close()
	if err := nm.Truncate(metaMapStart + il + ol + cl); err != nil {
		return fmt.Errorf("grow volume metadata: %w", err)
	}
	// The regions keep their order; each old one is a prefix of the new.
	for _, r := range []struct{ from, to, n int64 }{
		{metaMapStart, metaMapStart, oil},
		{metaMapStart + oil, metaMapStart + il, ool},
		{metaMapStart + oil + ool, metaMapStart + il + ol, ocl},
	} {
		buf := make([]byte, r.n)
		if _, err := meta.ReadAt(buf, r.from); err != nil {
			return fmt.Errorf("grow volume metadata: read: %w", err)
		}
		if _, err := nm.WriteAt(buf, r.to); err != nil {
			return fmt.Errorf("grow volume metadata: %w", err)
		}
	}
	h.Size = size
	if err := writeHeader(nm, &h); err != nil {
		return err
	}
	if st.Mode().IsRegular() {
		if err := data.Truncate(size); err != nil {
			return fmt.Errorf("grow volume data: %w", err)
		}
		if err := data.Sync(); err != nil {
			return fmt.Errorf("grow volume data: %w", err)
		}
	}
	return finishGrow(metaPath)
}

// finishGrow puts grown metadata in place.
func finishGrow(metaPath string) error {
	if err := os.Rename(metaPath+".grow", metaPath); err != nil {
		return fmt.Errorf("grow volume metadata: %w", err)
	}
	return syncDir(metaPath)
}

// resumeGrow finishes a grow a crash interrupted: the data file already
// has the size the pending metadata says.
func resumeGrow(dataPath, metaPath string) bool {
	f, err := os.Open(metaPath + ".grow")
	if err != nil {
		return false
	}
	h, err := readHeader(f)
	f.Close()
	st, serr := os.Stat(dataPath)
	if err != nil || serr != nil || st.Size() != h.Size {
		os.Remove(metaPath + ".grow")
		return false
	}
	return finishGrow(metaPath) == nil
}

func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
