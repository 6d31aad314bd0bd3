package queue

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/safefile"
)

// The spill journal is a directory of segment files, named by a
// hexadecimal sequence number so that names sort oldest first:
//
//	0000000000000001.jnl
//	0000000000000002.jnl
//
// A segment starts with the 8-byte magic "OBSJNL01" and holds at most one
// store batch of records, each framed as
//
//	uint32 LE  payload length
//	uint32 LE  CRC-32C (Castagnoli) of the payload
//	payload    see appendPayload
//
// Records are only ever appended, and each spill batch is followed by one
// fsync of the segment. A crash while spilling leaves at most a torn last
// record, which recovery finds by its length or CRC and truncates. A segment
// is replayed into the store as one WriteCalls (one transaction) and
// deleted only after that commit.
const (
	journalMagic  = "OBSJNL01"
	segmentSuffix = ".jnl"
	frameHeader   = 8
	// maxPayload bounds one record's payload: a larger length field is
	// corruption, not a record. Error texts are bounded far below this.
	maxPayload     = 1 << 20
	payloadVersion = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Decoding errors.
var (
	// ErrTorn: the data ends inside a record (a crash while spilling).
	ErrTorn = errors.New("journal record is torn (the data ends inside it)")
	// ErrBadRecord: the record's length, checksum or fields are invalid.
	ErrBadRecord = errors.New("journal record is corrupt")
)

// AppendRecord appends the framed encoding of c to b. Error texts that
// would not fit maxPayload are cut and marked truncated.
func AppendRecord(b []byte, c *record.Call) []byte {
	start := len(b)
	b = append(b, make([]byte, frameHeader)...)
	b = appendPayload(b, c)
	if n := len(b) - start - frameHeader; n > maxPayload {
		cut := *c
		over := n - maxPayload
		cut.Error = cutUTF8(cut.Error, max(0, len(cut.Error)-over))
		cut.ErrorTruncated = true
		b = appendPayload(b[:start+frameHeader], &cut)
	}
	p := b[start+frameHeader:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(p)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(p, castagnoli))
	return b
}

func cutUTF8(s string, n int) string {
	if n >= len(s) {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func appendPayload(b []byte, c *record.Call) []byte {
	b = append(b, payloadVersion)
	b = binary.AppendUvarint(b, c.ID)
	b = binary.AppendUvarint(b, c.ParentID)
	b = binary.AppendUvarint(b, uint64(c.PID))
	b = binary.AppendUvarint(b, c.GoID)
	b = appendString(b, c.Function)
	b = binary.AppendVarint(b, c.Start)
	b = binary.AppendVarint(b, c.Duration)
	b = append(b, byte(c.Status))
	b = appendString(b, c.ErrorType)
	b = appendString(b, c.Error)
	var t byte
	if c.ErrorTruncated {
		t = 1
	}
	return append(b, t)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// DecodeRecord decodes the first framed record of b and returns its length.
// It fails with ErrTorn when b ends inside the record and ErrBadRecord when
// the record is invalid; either way nothing after it can be trusted.
func DecodeRecord(b []byte) (c record.Call, n int, err error) {
	if len(b) < frameHeader {
		return c, 0, ErrTorn
	}
	size := binary.LittleEndian.Uint32(b)
	if size == 0 || size > maxPayload {
		return c, 0, fmt.Errorf("%w: length %d", ErrBadRecord, size)
	}
	if uint64(len(b)-frameHeader) < uint64(size) {
		return c, 0, ErrTorn
	}
	p := b[frameHeader : frameHeader+int(size)]
	if got, want := crc32.Checksum(p, castagnoli), binary.LittleEndian.Uint32(b[4:]); got != want {
		return c, 0, fmt.Errorf("%w: checksum %08x, want %08x", ErrBadRecord, got, want)
	}
	if err := decodePayload(p, &c); err != nil {
		return record.Call{}, 0, fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	return c, frameHeader + int(size), nil
}

type payloadReader struct {
	b   []byte
	err error
}

func (r *payloadReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errors.New("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *payloadReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errors.New("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *payloadReader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = errors.New("short payload")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *payloadReader) string() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.err = errors.New("string overruns payload")
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func decodePayload(p []byte, c *record.Call) error {
	r := payloadReader{b: p}
	if v := r.byte(); r.err == nil && v != payloadVersion {
		return fmt.Errorf("unknown payload version %d", v)
	}
	c.ID = r.uvarint()
	c.ParentID = r.uvarint()
	pid := r.uvarint()
	if pid > math.MaxUint32 {
		return errors.New("pid out of range")
	}
	c.PID = uint32(pid)
	c.GoID = r.uvarint()
	c.Function = r.string()
	c.Start = r.varint()
	c.Duration = r.varint()
	c.Status = record.Status(r.byte())
	c.ErrorType = r.string()
	c.Error = r.string()
	switch r.byte() {
	case 0:
	case 1:
		c.ErrorTruncated = true
	default:
		if r.err == nil {
			return errors.New("bad truncated flag")
		}
	}
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%d trailing bytes", len(r.b))
	}
	return nil
}

// segment is one journal file.
type segment struct {
	seq       uint64
	path      string
	n         int   // intact records
	size      int64 // bytes known good (header included)
	funcs     map[string]uint64
	recovered bool // written by an earlier run
	bad       bool // can't be read back; left on disk, skipped
	// done holds the ids already written one by one (or rejected) after
	// the store refused the segment as a whole; they are not written again.
	done map[uint64]bool
}

// journal owns the segment files. Its methods are called by the spiller
// and the writer and serialise on the caller's side (Queue.jmu).
type journal struct {
	dir     string
	maxRecs int // records per segment: one store batch

	opened  bool
	openErr error
	lock    *os.File
	segs    []*segment // oldest first; the last one may be active
	active  *os.File   // open for append: segs[len-1]
	nextSeq uint64
	buf     []byte
}

// recoveryNote describes one damaged segment found by open.
type recoveryNote struct {
	path     string
	intact   int
	offset   int64 // where the damage starts
	dropped  int64 // bytes cut off
	reason   error
	setAside string // when the file was renamed instead
}

// open creates the directory, takes its lock, and registers segments left
// by an earlier run, truncating torn tails. It runs once.
func (j *journal) open() (notes []recoveryNote, err error) {
	if j.opened {
		return nil, j.openErr
	}
	j.opened = true
	defer func() { j.openErr = err }()
	d, err := safefile.MkdirAll(j.dir)
	if err != nil {
		return nil, fmt.Errorf("spill journal: %w", err)
	}
	d.Close()
	lf, err := safefile.OpenFile(filepath.Join(j.dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spill journal: %w", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		return nil, fmt.Errorf("spill journal %s is in use by another obs-agent writing the same store: %w", j.dir, err)
	}
	j.lock = lf
	ents, err := safefile.ReadDir(j.dir)
	if err != nil {
		return nil, fmt.Errorf("spill journal: %w", err)
	}
	j.nextSeq = 1
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, segmentSuffix) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, segmentSuffix), 16, 64)
		if err != nil {
			continue
		}
		j.nextSeq = max(j.nextSeq, seq+1)
		s, note, err := recoverSegment(filepath.Join(j.dir, name), seq)
		if note != nil {
			notes = append(notes, *note)
		}
		if err != nil {
			return notes, err
		}
		if s != nil {
			j.segs = append(j.segs, s)
		}
	}
	slices.SortFunc(j.segs, func(a, b *segment) int { return cmp.Compare(a.seq, b.seq) })
	return notes, nil
}

// recoverSegment validates one segment from an earlier run. An empty one is
// removed; a damaged tail is truncated (and described in the note); a file
// that is not a journal segment is renamed aside.
func recoverSegment(path string, seq uint64) (*segment, *recoveryNote, error) {
	data, err := safefile.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("spill journal: %w", err)
	}
	if len(data) < len(journalMagic) || string(data[:len(journalMagic)]) != journalMagic {
		if len(data) <= len(journalMagic) && journalMagic[:len(data)] == string(data) {
			// Torn while the segment was being created: nothing in it.
			return nil, nil, removeFile(path)
		}
		aside := path + ".bad"
		if err := safefile.Rename(path, aside); err != nil {
			return nil, nil, fmt.Errorf("spill journal: %w", err)
		}
		return nil, &recoveryNote{path: path, reason: errors.New("not a journal segment (bad magic)"), setAside: aside, dropped: int64(len(data))}, nil
	}
	s := &segment{seq: seq, path: path, recovered: true, funcs: map[string]uint64{}}
	off := len(journalMagic)
	var note *recoveryNote
	for off < len(data) {
		c, n, err := DecodeRecord(data[off:])
		if err != nil {
			note = &recoveryNote{path: path, intact: s.n, offset: int64(off), dropped: int64(len(data) - off), reason: err}
			if err := safefile.Truncate(path, int64(off)); err != nil {
				return nil, note, fmt.Errorf("spill journal: truncate torn tail: %w", err)
			}
			if err := syncFile(path); err != nil {
				return nil, note, err
			}
			break
		}
		s.n++
		s.funcs[c.Function]++
		off += n
	}
	s.size = int64(off)
	if s.n == 0 {
		return nil, note, removeFile(path)
	}
	return s, note, nil
}

func syncFile(path string) error {
	f, err := safefile.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("spill journal: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("spill journal: fsync %s: %w", path, err)
	}
	return nil
}

func removeFile(path string) error {
	if err := safefile.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spill journal: %w", err)
	}
	return nil
}

// syncDir makes created and removed names durable.
func (j *journal) syncDir() error {
	d, err := safefile.OpenDir(j.dir)
	if err != nil {
		return fmt.Errorf("spill journal: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("spill journal: fsync %s: %w", j.dir, err)
	}
	return nil
}

// appendRecords writes recs to the journal, oldest first, with one fsync
// per segment touched. It returns how many records were made durable
// (a prefix of recs) and the segments they went to with their counts.
// On an error the failed segment is cut back to its last good size, so
// the journal never holds half a batch.
func (j *journal) appendRecords(recs []record.Call) (done int, err error) {
	if _, err := j.open(); err != nil {
		return 0, err
	}
	for done < len(recs) {
		if j.active == nil || j.segs[len(j.segs)-1].n >= j.maxRecs {
			if err := j.newSegment(); err != nil {
				return done, err
			}
		}
		s := j.segs[len(j.segs)-1]
		chunk := recs[done:min(len(recs), done+j.maxRecs-s.n)]
		j.buf = j.buf[:0]
		for i := range chunk {
			j.buf = AppendRecord(j.buf, &chunk[i])
		}
		_, err := j.active.Write(j.buf)
		if err == nil {
			err = j.active.Sync()
		}
		if err != nil {
			j.cutBack(s)
			return done, fmt.Errorf("spill journal: write %s: %w", s.path, err)
		}
		s.size += int64(len(j.buf))
		s.n += len(chunk)
		for i := range chunk {
			s.funcs[chunk[i].Function]++
		}
		done += len(chunk)
	}
	return done, nil
}

// cutBack truncates the active segment to its last good size after a
// failed write. When even that fails, the segment is sealed as it is: its
// torn tail is found and cut by the CRC when it is read back.
func (j *journal) cutBack(s *segment) {
	if err := j.active.Truncate(s.size); err == nil {
		if _, err := j.active.Seek(s.size, io.SeekStart); err == nil {
			return
		}
	}
	j.seal()
}

func (j *journal) newSegment() error {
	j.seal()
	seq := j.nextSeq
	path := filepath.Join(j.dir, fmt.Sprintf("%016x%s", seq, segmentSuffix))
	f, err := safefile.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, safefile.DataMode())
	if err != nil {
		return fmt.Errorf("spill journal: %w", err)
	}
	j.nextSeq++
	fail := func(err error) error {
		f.Close()
		safefile.Remove(path)
		return fmt.Errorf("spill journal: create %s: %w", path, err)
	}
	if _, err := f.WriteString(journalMagic); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := j.syncDir(); err != nil {
		return fail(err)
	}
	j.active = f
	j.segs = append(j.segs, &segment{seq: seq, path: path, size: int64(len(journalMagic)), funcs: map[string]uint64{}})
	return nil
}

// seal closes the active segment; the next append starts a new one.
func (j *journal) seal() {
	if j.active != nil {
		j.active.Close()
		j.active = nil
	}
	if n := len(j.segs); n > 0 && j.segs[n-1].n == 0 && !j.segs[n-1].recovered {
		// Never written: don't leave empty files behind.
		safefile.Remove(j.segs[n-1].path)
		j.segs = j.segs[:n-1]
	}
}

// oldest returns the oldest readable segment and its records, sealing it
// first when it is the active one; nil when there is none. A segment that
// reads back short is returned with what is intact and a note.
func (j *journal) oldest() (*segment, []record.Call, *recoveryNote, error) {
	for _, s := range j.segs {
		if s.bad || s.n == 0 {
			continue
		}
		if j.active != nil && s == j.segs[len(j.segs)-1] {
			j.seal()
		}
		data, err := safefile.ReadFile(s.path)
		if err != nil {
			s.bad = true
			return s, nil, nil, fmt.Errorf("spill journal: read %s: %w", s.path, err)
		}
		if int64(len(data)) > s.size {
			data = data[:s.size]
		}
		if len(data) < len(journalMagic) || string(data[:len(journalMagic)]) != journalMagic {
			return s, nil, &recoveryNote{path: s.path, reason: errors.New("segment header damaged")}, nil
		}
		recs := make([]record.Call, 0, s.n)
		off := len(journalMagic)
		var note *recoveryNote
		for off < len(data) {
			c, n, err := DecodeRecord(data[off:])
			if err != nil {
				note = &recoveryNote{path: s.path, intact: len(recs), offset: int64(off), dropped: int64(len(data) - off), reason: err}
				break
			}
			recs = append(recs, c)
			off += n
		}
		return s, recs, note, nil
	}
	return nil, nil, nil, nil
}

// remove deletes a segment whose records the store has committed.
func (j *journal) remove(s *segment) error {
	if j.active != nil && s == j.segs[len(j.segs)-1] {
		j.seal()
	}
	j.segs = slices.DeleteFunc(j.segs, func(x *segment) bool { return x == s })
	if err := removeFile(s.path); err != nil {
		return err
	}
	return j.syncDir()
}

// close releases the files and the directory lock. An empty journal
// directory is removed.
func (j *journal) close() {
	j.seal()
	if j.lock == nil {
		return
	}
	empty := len(j.segs) == 0
	if empty {
		safefile.Remove(filepath.Join(j.dir, "LOCK"))
	}
	j.lock.Close()
	j.lock = nil
	if empty {
		safefile.RemoveDir(j.dir) // fails, harmlessly, if anything else is in it
	}
}
