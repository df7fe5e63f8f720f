package replica

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// A Store is one node's copy of a volume: a data file (or block device)
// holding the volume's bytes and a metadata file beside it:
//
//	0      header slot 0 (4 KiB)       two slots written alternately, so a
//	4096   header slot 1 (4 KiB)       torn write leaves the other intact
//	8192   intent bitmap               1 bit per 4 MiB extent being written
//	…      out-of-sync bitmap          1 bit per 4 KiB block that may differ from the peer
//	…      checksums                   CRC32C per 4 KiB block, xor zeroBlockCRC
//
// Everything after the header slots is memory-mapped. The intent bitmap is
// the activity log: a bit is on disk before the first write to its extent,
// and cleared only once the extent's data, checksums and out-of-sync bits
// are durable. After a crash, every extent whose intent bit is set is
// marked out of sync (the peer may not have its last writes, or this copy
// may not have the peer's) and its checksums are recomputed from the data,
// so a crash never forces a full resync and never leaves false checksum
// errors. Checksums are stored xor the checksum of a zero block, so the
// sparse, zero-filled metadata of a new volume says "all zeroes" correctly.
type Store struct {
	dataPath, metaPath string
	data               *os.File
	meta               *os.File
	size               int64
	blocks             int64
	extents            int64

	mapped    []byte // the mmap of meta from metaMapStart
	intent    []byte // views into mapped
	outOfSync []byte
	crcs      []byte

	// mu guards the header, the bitmaps' bits and the intent bookkeeping.
	mu        sync.Mutex
	hdr       header
	hot       map[int64]*hotExtent
	oosBlocks int64 // set bits in outOfSync
	// intentMu serialises durable intent updates (msync of the page).
	intentMu sync.Mutex
}

type hotExtent struct {
	inflight int
	lastUse  time.Time
	touches  uint64
}

// BlockSize is the unit of checksums and of the out-of-sync bitmap.
const BlockSize = 4096

// ExtentSize is the unit of the intent bitmap (the activity log).
const ExtentSize = 4 << 20

const (
	metaSlotSize  = 4096
	metaMapStart  = 2 * metaSlotSize
	headerMagic   = "tandem-replica-meta"
	headerVersion = 1
	// maxHot bounds the extents that may be in the intent bitmap at once:
	// after a crash at most maxHot×ExtentSize (about 4.8 GiB, DRBD's
	// default activity log) are resynced. Past it, a checkpoint takes the
	// least recently used quarter out.
	maxHot = 1237
	// extentIdle is how long an extent must go unwritten before a
	// checkpoint takes it out of the intent bitmap.
	extentIdle = 2 * time.Second
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// zeroBlockCRC is the CRC32C of a block of zeroes.
var zeroBlockCRC = crc32.Checksum(make([]byte, BlockSize), castagnoli)

// BlockCRC is the checksum of one block.
func BlockCRC(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// header is the metadata's first part, JSON in a slot with a CRC32C.
type header struct {
	Magic       string      `json:"magic"`
	Version     int         `json:"version"`
	Seq         uint64      `json:"seq"`
	VolumeID    string      `json:"volume_id"`
	Size        int64       `json:"size"`
	Generations Generations `json:"generations"`
	// SyncBase is nonzero while this copy is an unfinished sync target:
	// the source's bitmap generation that the sync started from. Such a
	// copy is inconsistent and must not serve a VM.
	SyncBase uint64 `json:"sync_base,omitempty"`
	// Clean is false while the store is open: true at open means the last
	// close was orderly and no intent extent needs recovery.
	Clean bool `json:"clean"`
}

// StoreInfo is what Open reports.
type StoreInfo struct {
	// Recovered lists the intent extents found after an unclean shutdown
	// (marked out of sync, checksums recomputed).
	Recovered int
}

// ErrWrongSize is returned by Open when the data file's size differs from
// the metadata's.
var ErrWrongSize = errors.New("backing file has the wrong size")

// metaLayout gives the offsets (from metaMapStart) of the mapped regions.
func metaLayout(size int64) (blocks, extents, intentLen, oosLen, crcLen int64) {
	blocks = (size + BlockSize - 1) / BlockSize
	extents = (size + ExtentSize - 1) / ExtentSize
	round := func(n int64) int64 { return (n + 4095) &^ 4095 }
	return blocks, extents, round((extents + 7) / 8), round((blocks + 7) / 8), round(blocks * 4)
}

// CreateStore makes a new copy of a volume at dataPath (a file, created
// sparse, or an existing block device of at least size bytes) with its
// metadata at metaPath. gen is the copy's first generation: the same value
// on both nodes for a new, empty volume (both copies are zeroes, in sync),
// NoData for a copy that must be filled by a full sync.
func CreateStore(dataPath, metaPath, volumeID string, size int64, gen uint64) error {
	if size <= 0 || size%BlockSize != 0 {
		return fmt.Errorf("volume size %d is not a positive multiple of %d", size, BlockSize)
	}
	if _, err := os.Stat(metaPath); err == nil {
		return fmt.Errorf("create %s: %w", metaPath, os.ErrExist)
	}
	data, err := os.OpenFile(dataPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create volume data: %w", err)
	}
	defer data.Close()
	st, err := data.Stat()
	if err != nil {
		return fmt.Errorf("create volume data: %w", err)
	}
	if st.Mode().IsRegular() {
		// A fresh sparse file: every block reads as zeroes.
		if err := data.Truncate(0); err != nil {
			return fmt.Errorf("create volume data: %w", err)
		}
		if err := data.Truncate(size); err != nil {
			return fmt.Errorf("create volume data: %w", err)
		}
	} else if n, err := deviceSize(data); err != nil || n < size {
		return fmt.Errorf("create volume on %s: device of %d bytes, need %d: %w", dataPath, n, size, errors.Join(err, ErrWrongSize))
	}
	if err := data.Sync(); err != nil {
		return fmt.Errorf("create volume data: %w", err)
	}
	_, _, il, ol, cl := metaLayout(size)
	tmp := metaPath + ".new"
	meta, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create volume metadata: %w", err)
	}
	defer os.Remove(tmp)
	defer meta.Close()
	if err := meta.Truncate(metaMapStart + il + ol + cl); err != nil {
		return fmt.Errorf("create volume metadata: %w", err)
	}
	h := header{Magic: headerMagic, Version: headerVersion, VolumeID: volumeID, Size: size,
		Generations: Generations{Current: gen}, Clean: true}
	if err := writeHeader(meta, &h); err != nil {
		return err
	}
	if err := meta.Sync(); err != nil {
		return fmt.Errorf("create volume metadata: %w", err)
	}
	if err := os.Rename(tmp, metaPath); err != nil {
		return fmt.Errorf("create volume metadata: %w", err)
	}
	return nil
}

func deviceSize(f *os.File) (int64, error) {
	n, err := f.Seek(0, 2)
	if err != nil {
		return 0, err
	}
	_, err = f.Seek(0, 0)
	return n, err
}

// writeHeader writes h (with the next sequence number) into the slot the
// sequence number picks and syncs it.
func writeHeader(meta *os.File, h *header) error {
	h.Seq++
	b, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("volume header: %w", err)
	}
	if len(b) > metaSlotSize-8 {
		return fmt.Errorf("volume header of %d bytes does not fit its slot", len(b))
	}
	slot := make([]byte, metaSlotSize)
	binary.BigEndian.PutUint32(slot, uint32(len(b)))
	copy(slot[8:], b)
	binary.BigEndian.PutUint32(slot[4:], crc32.Checksum(b, castagnoli))
	if _, err := meta.WriteAt(slot, int64(h.Seq%2)*metaSlotSize); err != nil {
		return fmt.Errorf("write volume header: %w", err)
	}
	if err := meta.Sync(); err != nil {
		return fmt.Errorf("write volume header: %w", err)
	}
	return nil
}

// readHeader returns the valid slot with the higher sequence number.
func readHeader(meta *os.File) (header, error) {
	var best header
	var errs []error
	for i := 0; i < 2; i++ {
		slot := make([]byte, metaSlotSize)
		if _, err := meta.ReadAt(slot, int64(i)*metaSlotSize); err != nil {
			errs = append(errs, fmt.Errorf("slot %d: %w", i, err))
			continue
		}
		h, err := parseHeaderSlot(slot)
		if err != nil {
			errs = append(errs, fmt.Errorf("slot %d: %w", i, err))
			continue
		}
		if h.Seq > best.Seq {
			best = h
		}
	}
	if best.Seq == 0 {
		return header{}, fmt.Errorf("no valid volume header: %w", errors.Join(errs...))
	}
	return best, nil
}

func parseHeaderSlot(slot []byte) (header, error) {
	n := binary.BigEndian.Uint32(slot)
	if n == 0 || n > metaSlotSize-8 {
		return header{}, fmt.Errorf("header length %d", n)
	}
	b := slot[8 : 8+n]
	if crc32.Checksum(b, castagnoli) != binary.BigEndian.Uint32(slot[4:]) {
		return header{}, errors.New("header checksum mismatch")
	}
	var h header
	if err := json.Unmarshal(b, &h); err != nil {
		return header{}, fmt.Errorf("header: %w", err)
	}
	if h.Magic != headerMagic {
		return header{}, fmt.Errorf("header magic %q", h.Magic)
	}
	if h.Version != headerVersion {
		return header{}, fmt.Errorf("header version %d, this build reads %d", h.Version, headerVersion)
	}
	if h.Size <= 0 || h.Size%BlockSize != 0 {
		return header{}, fmt.Errorf("header size %d", h.Size)
	}
	return h, nil
}

// OpenStore opens a copy made by CreateStore, recovering from an unclean
// shutdown first.
func OpenStore(dataPath, metaPath string) (*Store, StoreInfo, error) {
	resumeGrow(dataPath, metaPath)
	meta, err := os.OpenFile(metaPath, os.O_RDWR, 0)
	if err != nil {
		return nil, StoreInfo{}, fmt.Errorf("open volume metadata: %w", err)
	}
	h, err := readHeader(meta)
	if err != nil {
		meta.Close()
		return nil, StoreInfo{}, fmt.Errorf("%s: %w", metaPath, err)
	}
	data, err := os.OpenFile(dataPath, os.O_RDWR, 0)
	if err != nil {
		meta.Close()
		return nil, StoreInfo{}, fmt.Errorf("open volume data: %w", err)
	}
	s := &Store{dataPath: dataPath, metaPath: metaPath, data: data, meta: meta, size: h.Size, hdr: h, hot: map[int64]*hotExtent{}}
	fail := func(err error) (*Store, StoreInfo, error) {
		s.unmap()
		data.Close()
		meta.Close()
		return nil, StoreInfo{}, err
	}
	n, err := deviceSize(data)
	if err != nil {
		return fail(fmt.Errorf("open volume data: %w", err))
	}
	if st, _ := data.Stat(); (st != nil && st.Mode().IsRegular() && n != h.Size) || n < h.Size {
		return fail(fmt.Errorf("%s is %d bytes, its metadata says %d: %w", dataPath, n, h.Size, ErrWrongSize))
	}
	var il, ol, cl int64
	s.blocks, s.extents, il, ol, cl = metaLayout(h.Size)
	mst, err := meta.Stat()
	if err != nil {
		return fail(fmt.Errorf("open volume metadata: %w", err))
	}
	if mst.Size() != metaMapStart+il+ol+cl {
		return fail(fmt.Errorf("%s is %d bytes, want %d for a volume of %d bytes", metaPath, mst.Size(), metaMapStart+il+ol+cl, h.Size))
	}
	s.mapped, err = unix.Mmap(int(meta.Fd()), metaMapStart, int(il+ol+cl), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(fmt.Errorf("map volume metadata: %w", err))
	}
	s.intent = s.mapped[:il]
	s.outOfSync = s.mapped[il : il+ol]
	s.crcs = s.mapped[il+ol:]
	for _, b := range s.outOfSync {
		s.oosBlocks += int64(bits.OnesCount8(b))
	}
	var info StoreInfo
	if !h.Clean {
		if info.Recovered, err = s.recover(); err != nil {
			return fail(err)
		}
	}
	s.hdr.Clean = false
	if err := writeHeader(meta, &s.hdr); err != nil {
		return fail(err)
	}
	return s, info, nil
}

// recover handles an unclean shutdown: every extent in the intent bitmap
// is marked out of sync and its checksums recomputed from its data.
func (s *Store) recover() (int, error) {
	n := 0
	buf := make([]byte, ExtentSize)
	for e := int64(0); e < s.extents; e++ {
		if !getBit(s.intent, e) {
			continue
		}
		n++
		off := e * ExtentSize
		l := min(int64(ExtentSize), s.size-off)
		if _, err := s.data.ReadAt(buf[:l], off); err != nil {
			return n, fmt.Errorf("recover extent %d: %w", e, err)
		}
		for b := int64(0); b < l/BlockSize; b++ {
			s.setCRC(off/BlockSize+b, BlockCRC(buf[b*BlockSize:(b+1)*BlockSize]))
		}
		s.markOutOfSyncLocked(off/BlockSize, (off+l)/BlockSize)
	}
	if n == 0 {
		return 0, nil
	}
	if err := s.data.Sync(); err != nil {
		return n, fmt.Errorf("recover: %w", err)
	}
	if err := unix.Msync(s.mapped, unix.MS_SYNC); err != nil {
		return n, fmt.Errorf("recover: %w", err)
	}
	clear(s.intent)
	if err := unix.Msync(s.intent, unix.MS_SYNC); err != nil {
		return n, fmt.Errorf("recover: %w", err)
	}
	return n, nil
}

func (s *Store) unmap() {
	if s.mapped != nil {
		unix.Munmap(s.mapped)
		s.mapped = nil
	}
}

// Close checkpoints everything and marks the copy clean.
func (s *Store) Close() error {
	err := s.Checkpoint(true)
	s.mu.Lock()
	if err == nil {
		s.hdr.Clean = true
		err = writeHeader(s.meta, &s.hdr)
	}
	s.mu.Unlock()
	s.unmap()
	return errors.Join(err, s.data.Close(), s.meta.Close())
}

// Size is the volume's size in bytes.
func (s *Store) Size() int64 { return s.size }

// VolumeID is the volume the copy belongs to.
func (s *Store) VolumeID() string { return s.hdr.VolumeID }

// Generations returns the copy's generations and sync base.
func (s *Store) Generations() (Generations, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hdr.Generations, s.hdr.SyncBase
}

// updateHeader changes the header durably.
func (s *Store) updateHeader(change func(h *header)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	change(&s.hdr)
	return writeHeader(s.meta, &s.hdr)
}

// --- bits and checksums -------------------------------------------------

func getBit(b []byte, i int64) bool { return b[i>>3]&(1<<(i&7)) != 0 }

func (s *Store) crc(block int64) uint32 {
	return binary.LittleEndian.Uint32(s.crcs[block*4:]) ^ zeroBlockCRC
}

func (s *Store) setCRC(block int64, c uint32) {
	binary.LittleEndian.PutUint32(s.crcs[block*4:], c^zeroBlockCRC)
}

// markOutOfSyncLocked sets the bits of blocks [from, to).
func (s *Store) markOutOfSyncLocked(from, to int64) {
	for i := from; i < to; i++ {
		if m := byte(1 << (i & 7)); s.outOfSync[i>>3]&m == 0 {
			s.outOfSync[i>>3] |= m
			s.oosBlocks++
		}
	}
}

func (s *Store) clearOutOfSyncLocked(from, to int64) {
	for i := from; i < to; i++ {
		if m := byte(1 << (i & 7)); s.outOfSync[i>>3]&m != 0 {
			s.outOfSync[i>>3] &^= m
			s.oosBlocks--
		}
	}
}

// MarkOutOfSync records that the bytes [off, off+length) may differ from
// the peer (whole blocks touched).
func (s *Store) MarkOutOfSync(off, length int64) {
	from, to := blockSpan(off, length)
	s.mu.Lock()
	s.markOutOfSyncLocked(from, to)
	s.mu.Unlock()
}

// MarkAllOutOfSync marks the whole volume: a full sync.
func (s *Store) MarkAllOutOfSync() {
	s.mu.Lock()
	s.markOutOfSyncLocked(0, s.blocks)
	s.mu.Unlock()
}

// ClearOutOfSync records that the whole blocks of [off, off+length) are
// the same on both copies.
func (s *Store) ClearOutOfSync(off, length int64) {
	from := (off + BlockSize - 1) / BlockSize
	to := (off + length) / BlockSize
	if from >= to {
		return
	}
	s.mu.Lock()
	s.clearOutOfSyncLocked(from, to)
	s.mu.Unlock()
}

// OutOfSyncBytes is how much of the volume may differ from the peer.
func (s *Store) OutOfSyncBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.oosBlocks * BlockSize
}

// IsOutOfSync reports whether block b's bit is set.
func (s *Store) IsOutOfSync(block int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return getBit(s.outOfSync, block)
}

// NextOutOfSync finds the first run of out-of-sync blocks at or after
// block from, at most max blocks long; ok is false when there is none.
func (s *Store) NextOutOfSync(from, max int64) (start, n int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := from
	for i < s.blocks {
		if i&63 == 0 && i+64 <= s.blocks && binary.LittleEndian.Uint64(s.outOfSync[i>>3:]) == 0 {
			i += 64
			continue
		}
		if getBit(s.outOfSync, i) {
			break
		}
		i++
	}
	if i >= s.blocks {
		return 0, 0, false
	}
	start = i
	for i < s.blocks && i-start < max && getBit(s.outOfSync, i) {
		i++
	}
	return start, i - start, true
}

// OutOfSyncRuns returns the out-of-sync bitmap as runs of blocks, the form
// it crosses the wire in.
func (s *Store) OutOfSyncRuns() []Run {
	var runs []Run
	for from := int64(0); ; {
		start, n, ok := s.NextOutOfSync(from, s.blocks)
		if !ok {
			return runs
		}
		runs = append(runs, Run{Start: start, Count: n})
		from = start + n
	}
}

// MarkRuns sets the bits of runs (the peer's bitmap, merged into ours).
func (s *Store) MarkRuns(runs []Run) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range runs {
		if r.Start < 0 || r.Count < 0 || r.Start+r.Count > s.blocks {
			return fmt.Errorf("bitmap run %d+%d outside the volume's %d blocks", r.Start, r.Count, s.blocks)
		}
		s.markOutOfSyncLocked(r.Start, r.Start+r.Count)
	}
	return nil
}

// Run is a range of blocks.
type Run struct {
	Start int64 `json:"s"`
	Count int64 `json:"n"`
}

func blockSpan(off, length int64) (from, to int64) {
	return off / BlockSize, (off + length + BlockSize - 1) / BlockSize
}

// --- the intent bitmap ---------------------------------------------------

// beginWrite puts the extents of [off, off+length) in the intent bitmap
// (durably, before any of their data changes) and counts the write as in
// flight there. endWrite undoes the count.
func (s *Store) beginWrite(off, length int64) error {
	first, last := off/ExtentSize, (off+length-1)/ExtentSize
	now := time.Now()
	var cold []int64
	s.mu.Lock()
	for e := first; e <= last; e++ {
		h := s.hot[e]
		if h == nil {
			h = &hotExtent{}
			s.hot[e] = h
		}
		h.inflight++
		h.lastUse = now
		h.touches++
		if !getBit(s.intent, e) {
			s.intent[e>>3] |= 1 << (e & 7)
			cold = append(cold, e)
		}
	}
	tooHot := len(s.hot) > maxHot
	s.mu.Unlock()
	if len(cold) > 0 {
		if err := s.syncIntent(cold); err != nil {
			s.endWrite(off, length)
			return err
		}
	}
	if tooHot {
		// Take idle extents out of the intent bitmap now, so that a crash
		// never resyncs more than maxHot extents.
		if err := s.Checkpoint(false); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) endWrite(off, length int64) {
	first, last := off/ExtentSize, (off+length-1)/ExtentSize
	s.mu.Lock()
	for e := first; e <= last; e++ {
		if h := s.hot[e]; h != nil {
			h.inflight--
		}
	}
	s.mu.Unlock()
}

// syncIntent makes the intent bitmap's pages holding extents durable.
func (s *Store) syncIntent(extents []int64) error {
	s.intentMu.Lock()
	defer s.intentMu.Unlock()
	done := map[int64]bool{}
	for _, e := range extents {
		page := (e >> 3) &^ 4095
		if done[page] {
			continue
		}
		done[page] = true
		if err := unix.Msync(s.intent[page:min(page+4096, int64(len(s.intent)))], unix.MS_SYNC); err != nil {
			return fmt.Errorf("activity log: %w", err)
		}
	}
	return nil
}

// Checkpoint makes data, checksums and bitmaps durable and takes extents
// idle for extentIdle (all idle extents when all is set) out of the intent
// bitmap.
func (s *Store) Checkpoint(all bool) error {
	type cand struct {
		e       int64
		touches uint64
		lastUse time.Time
	}
	var cands, busy []cand
	now := time.Now()
	s.mu.Lock()
	for e, h := range s.hot {
		c := cand{e, h.touches, h.lastUse}
		switch {
		case h.inflight > 0:
		case all || now.Sub(h.lastUse) >= extentIdle:
			cands = append(cands, c)
		default:
			busy = append(busy, c)
		}
	}
	// Over the bound: the least recently used go too, down to 3/4 of it,
	// so that a stream of writes to new extents does not checkpoint at
	// every one.
	if over := len(s.hot) - len(cands) - maxHot*3/4; over > 0 && len(s.hot) > maxHot {
		slices.SortFunc(busy, func(a, b cand) int { return a.lastUse.Compare(b.lastUse) })
		cands = append(cands, busy[:min(over, len(busy))]...)
	}
	s.mu.Unlock()
	if err := s.data.Sync(); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	s.intentMu.Lock()
	defer s.intentMu.Unlock()
	if err := unix.Msync(s.mapped[len(s.intent):], unix.MS_SYNC); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if len(cands) == 0 {
		return nil
	}
	s.mu.Lock()
	for _, c := range cands {
		// an extent written since the sync above stays in the bitmap
		if h := s.hot[c.e]; h != nil && h.inflight == 0 && h.touches == c.touches {
			delete(s.hot, c.e)
			s.intent[c.e>>3] &^= 1 << (c.e & 7)
		}
	}
	s.mu.Unlock()
	if err := unix.Msync(s.intent, unix.MS_SYNC); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// HotExtents is the number of extents in the intent bitmap.
func (s *Store) HotExtents() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.hot)
}

// --- data ----------------------------------------------------------------

// writeBlocks writes whole blocks p at off (block aligned) with their
// checksums; the caller holds the range's lock and has called beginWrite.
func (s *Store) writeBlocks(p []byte, off int64, crcs []uint32, fua bool) error {
	if _, err := s.data.WriteAt(p, off); err != nil {
		// Part of it may have landed (a disk filling up): keep each
		// block's checksum true to what is there, old or new, so the
		// block stays readable.
		s.rechecksum(off, int64(len(p)))
		return fmt.Errorf("write %d bytes at %d: %w", len(p), off, err)
	}
	b0 := off / BlockSize
	for i, c := range crcs {
		s.setCRC(b0+int64(i), c)
	}
	if fua {
		if err := unix.Fdatasync(int(s.data.Fd())); err != nil {
			return fmt.Errorf("write at %d: %w", off, err)
		}
	}
	return nil
}

// rechecksum recomputes the checksums of the blocks in [off, off+length)
// from the data file.
func (s *Store) rechecksum(off, length int64) {
	buf := make([]byte, BlockSize)
	for b := off / BlockSize; b < (off+length+BlockSize-1)/BlockSize; b++ {
		if _, err := s.data.ReadAt(buf, b*BlockSize); err != nil {
			return
		}
		s.setCRC(b, BlockCRC(buf))
	}
}

// readBlocks reads whole blocks at off into p and returns the checksums
// stored for them (appended to crcs).
func (s *Store) readBlocks(p []byte, off int64, crcs []uint32) ([]uint32, error) {
	if _, err := s.data.ReadAt(p, off); err != nil {
		return crcs, fmt.Errorf("read %d bytes at %d: %w", len(p), off, err)
	}
	b0 := off / BlockSize
	for i := int64(0); i < int64(len(p))/BlockSize; i++ {
		crcs = append(crcs, s.crc(b0+i))
	}
	return crcs, nil
}

// zeroBlocks makes whole blocks [off, off+length) read as zeroes (a hole
// in a file) with the checksum of zeroes.
func (s *Store) zeroBlocks(off, length int64, fua bool) error {
	err := unix.Fallocate(int(s.data.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if err != nil {
		// a block device or a file system without holes: write zeroes
		zero := make([]byte, min(length, 1<<20))
		for o := off; o < off+length; o += int64(len(zero)) {
			n := min(int64(len(zero)), off+length-o)
			if _, err := s.data.WriteAt(zero[:n], o); err != nil {
				return fmt.Errorf("zero %d bytes at %d: %w", n, o, err)
			}
		}
	}
	b0 := off / BlockSize
	for i := int64(0); i < length/BlockSize; i++ {
		s.setCRC(b0+i, zeroBlockCRC)
	}
	if fua {
		if err := unix.Fdatasync(int(s.data.Fd())); err != nil {
			return fmt.Errorf("zero at %d: %w", off, err)
		}
	}
	return nil
}

// flush makes every completed write durable.
func (s *Store) flush() error {
	if err := unix.Fdatasync(int(s.data.Fd())); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return nil
}

// badBlocks returns the indexes of the blocks in p whose data does
// not match their stored checksums (p as read by readBlocks, crcs its result).
func badBlocks(p []byte, crcs []uint32) []int {
	var bad []int
	for i := range crcs {
		if BlockCRC(p[i*BlockSize:(i+1)*BlockSize]) != crcs[i] {
			bad = append(bad, i)
		}
	}
	return bad
}
