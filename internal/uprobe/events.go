package uprobe

import (
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"
)

// Event is one record from either ring, decoded.
type Event struct {
	ID, ParentID uint64
	GoID         uint64
	StartMono    uint64 // CLOCK_MONOTONIC ns; see Tracer.WallNs
	EndMono      uint64
	PID          uint32
	FuncID       uint32
	Status       uint8
	// Error lane only.
	PanicValue bool   // a runtime.gopanic value, not a call
	TypeAddr   uint64 // itab of an error, _type of a panic value
	DataAddr   uint64
	Word0      uint64 // the two words behind the data pointer
	Word1      uint64
	Text       []byte // string behind the data pointer; valid until the next read
	Truncated  bool
	// Snapshot is the memory behind a returned error, as its type's read
	// plan copied it (bpf/errtext.h); see Segments. Valid until the next
	// read; nil when the plain record was sent, empty (not nil) when the
	// value has no bytes to copy (a zero-size type).
	Snapshot []byte
}

const (
	callEventSize = int(unsafe.Sizeof(obsCallEvent{}))
	errEventSize  = int(unsafe.Sizeof(obsErrEvent{}))
	// An errtext_event is an err_event followed by its snapshot.
	errTextHdrSize = int(unsafe.Offsetof(obsErrtextEvent{}.Snap))
)

// Lane is one of the two rings. One goroutine reads it; Flush may be
// called from any.
type Lane struct {
	r   *ring
	err bool
	buf []byte // an error record, copied out of the ring
}

// OK returns the ok lane: calls that returned normally.
func (t *Tracer) OK() *Lane { return &Lane{r: t.okRing} }

// Errors returns the error lane: error returns, panics and panic values.
func (t *Tracer) Errors() *Lane { return &Lane{r: t.errRing, err: true} }

// Read blocks until a record arrives, the deadline passes
// (os.ErrDeadlineExceeded), a Flush has drained the ring (ErrFlushed) or
// the tracer is closed (ErrClosed), and decodes it into ev. Text and
// Snapshot alias a buffer of the lane's, valid until the next Read.
//
// An ok record is decoded where the kernel wrote it; an error record is
// copied out first, since its text and snapshot outlive the decode.
func (l *Lane) Read(ev *Event) error {
	raw, err := l.r.read()
	if err != nil {
		return err
	}
	if l.err {
		l.buf = append(l.buf[:0], raw...)
		raw = l.buf
	}
	return decode(raw, l.err, ev)
}

// SetDeadline makes Read return os.ErrDeadlineExceeded when nothing
// arrives by t; the zero time means no deadline.
func (l *Lane) SetDeadline(t time.Time) { l.r.setDeadline(t) }

// Pending reports the bytes in the ring not read yet. Only the lane's
// reader may call it.
func (l *Lane) Pending() int { return l.r.pending() }

// Flush makes a blocked or next Read return everything already in the ring
// and then ErrFlushed, instead of waiting.
func (l *Lane) Flush() { l.r.flush() }

func decode(raw []byte, errLane bool, ev *Event) error {
	if len(raw) < callEventSize {
		return fmt.Errorf("short ring record: %d bytes", len(raw))
	}
	c := (*obsCallEvent)(unsafe.Pointer(&raw[0]))
	*ev = Event{
		ID: c.Id, ParentID: c.ParentId, GoID: c.Goid,
		StartMono: c.StartNs, EndMono: c.EndNs,
		PID: c.Tgid, FuncID: c.FuncId, Status: c.Status,
	}
	if !errLane {
		return nil
	}
	if len(raw) < errEventSize {
		return fmt.Errorf("short error record: %d bytes", len(raw))
	}
	e := (*obsErrEvent)(unsafe.Pointer(&raw[0]))
	ev.PanicValue = e.Kind == uint8(obsObsErrKindOBS_KIND_PANIC_VALUE)
	ev.TypeAddr = e.TypeAddr
	ev.DataAddr = e.DataAddr
	ev.Word0, ev.Word1 = e.Word0, e.Word1
	n := int(e.TextLen)
	if n > len(e.Text) {
		n = len(e.Text)
	}
	ev.Text = unsafe.Slice((*byte)(unsafe.Pointer(&e.Text[0])), n)
	ev.Truncated = e.Truncated != 0
	if len(raw) >= errTextHdrSize {
		// The record is only as long as its snapshot, so it is not viewed
		// as an obsErrtextEvent (whose Snap array is full size): that
		// pointer would reach past the record (checkptr says so).
		snapLen := *(*uint32)(unsafe.Pointer(&raw[unsafe.Offsetof(obsErrtextEvent{}.SnapLen)]))
		n := min(int(snapLen), len(raw)-errTextHdrSize)
		ev.Snapshot = raw[errTextHdrSize : errTextHdrSize+n]
	}
	return nil
}

// IsTimeout reports whether err is a deadline from Read.
func IsTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
