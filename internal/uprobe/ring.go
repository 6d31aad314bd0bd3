package uprobe

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ring reads one BPF ring buffer map from user space: records are read in
// place from the map's memory, and a reader with nothing to read waits
// through Go's netpoller.
//
// Why not cilium/ebpf's ringbuf.Reader, which this replaces: it waits in
// an epoll_pwait system call of its own, so a reader with nothing to read
// holds a thread blocked in a system call for up to its 20 ms poll. The Go
// scheduler's sysmon takes the P of such a thread (after 10 ms when
// another P is idle, after 20 µs when none is, as with the OTLP sink's
// goroutines busy), and after each such take it goes back to waking every
// 20 µs. Here a duplicate of the map's fd is registered with the runtime's
// own epoll set, the one sockets use: a reader that waits parks its
// goroutine and gives its thread back, and the kernel's wakeup of the
// ring (BPF_RB_FORCE_WAKEUP, see bpf/helpers.h) readies it like a socket's
// data does. docs/performance.md has the measurements.
//
// The kernel's layout (kernel/bpf/ringbuf.c): page 0 holds the consumer
// position, which user space writes; page 1 the producer position; the
// data pages follow, mapped twice in a row so that a record that wraps
// around the end is still contiguous. Each record starts with an 8-byte
// header whose first word is its length, with a busy bit while the
// program that reserved it has not yet submitted it and a discard bit if
// it discarded it; records are padded to 8 bytes.
type ring struct {
	// mu is held by a read: close takes it before it unmaps the memory a
	// read may be looking at.
	mu   sync.Mutex
	file *os.File // a non-blocking duplicate of the map's fd, in the netpoller
	conn syscall.RawConn

	consPage, dataPages []byte // the two mappings
	consPos, prodPos    *uintptr
	data                []byte // the data pages, twice
	mask                uintptr

	// next is the position after the record a read last returned. It is
	// published to the kernel as the consumer position by the next read,
	// so the record stays valid until then. Only the reader uses it.
	next uintptr

	flushed, closed atomic.Bool
}

const (
	ringHdrSize    = 8
	ringBusyBit    = 1 << 31
	ringDiscardBit = 1 << 30
)

// ErrClosed is returned by Read after the tracer is closed.
var ErrClosed = errors.New("tracer closed")

// ErrFlushed is returned by Read once a Flush has drained the ring.
var ErrFlushed = errors.New("ring flushed")

// newRing maps the ring buffer map m and registers it with the netpoller.
func newRing(m *ebpf.Map) (_ *ring, err error) {
	if m.Type() != ebpf.RingBuf {
		return nil, fmt.Errorf("map %s is a %s, not a ring buffer", m, m.Type())
	}
	size := int(m.MaxEntries())
	page := os.Getpagesize()
	if size < page || size&(size-1) != 0 {
		return nil, fmt.Errorf("ring buffer size %d is not a power of two of at least a page", size)
	}
	r := &ring{mask: uintptr(size - 1)}
	defer func() {
		if err != nil {
			r.unmap()
			if r.file != nil {
				r.file.Close()
			}
		}
	}()
	if r.consPage, err = unix.Mmap(m.FD(), 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("map the consumer page: %w", err)
	}
	if r.dataPages, err = unix.Mmap(m.FD(), int64(page), page+2*size, unix.PROT_READ, unix.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("map the data pages: %w", err)
	}
	r.consPos = (*uintptr)(unsafe.Pointer(&r.consPage[0]))
	r.prodPos = (*uintptr)(unsafe.Pointer(&r.dataPages[0]))
	r.data = r.dataPages[page:]
	r.next = atomic.LoadUintptr(r.consPos)

	// O_NONBLOCK makes os.NewFile register the fd with the netpoller
	// (edge-triggered); the flag is the open file's, shared with the
	// map's own fd, and means nothing to the bpf() calls made on it.
	fd, err := unix.FcntlInt(uintptr(m.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate the ring's fd: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("make the ring's fd non-blocking: %w", err)
	}
	r.file = os.NewFile(uintptr(fd), "bpf ring buffer")
	if err := r.file.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("the ring's fd cannot be polled by the Go runtime: %w", err)
	}
	if r.conn, err = r.file.SyscallConn(); err != nil {
		return nil, err
	}
	return r, nil
}

// read returns the next record, in place: it stays valid until the next
// read. It waits for one until the deadline passes
// (os.ErrDeadlineExceeded), the ring is flushed and empty (ErrFlushed) or
// closed (ErrClosed).
func (r *ring) read() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.data == nil {
		return nil, ErrClosed
	}
	atomic.StoreUintptr(r.consPos, r.next) // the last record is done with
	for {
		rec, busy, err := r.take()
		if rec != nil || err != nil {
			return rec, err
		}
		if busy {
			// A program between its reserve and its submit, on another
			// CPU: it runs with preemption off, for microseconds.
			runtime.Gosched()
			continue
		}
		if r.flushed.Load() {
			return nil, ErrFlushed
		}
		if err := r.wait(); err != nil {
			return nil, err
		}
	}
}

// take returns the record at next and moves next past it; nil when the
// ring is empty or (busy) its first record is not submitted yet.
// Discarded records are skipped.
func (r *ring) take() (rec []byte, busy bool, err error) {
	prod := atomic.LoadUintptr(r.prodPos)
	for r.next != prod {
		if prod-r.next < ringHdrSize {
			return nil, false, fmt.Errorf("ring buffer: %d bytes left, less than a record header", prod-r.next)
		}
		start := r.next & r.mask
		// An atomic load: the kernel clears the busy bit with an
		// exchange once the record is written.
		hdr := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[start])))
		if hdr&ringBusyBit != 0 {
			return nil, true, nil
		}
		n := uintptr(hdr &^ (ringBusyBit | ringDiscardBit))
		adv := ringHdrSize + (n+7)&^7
		if prod-r.next < adv {
			return nil, false, fmt.Errorf("ring buffer: a record of %d bytes with %d left", n, prod-r.next-ringHdrSize)
		}
		r.next += adv
		if hdr&ringDiscardBit != 0 {
			continue
		}
		return r.data[start+ringHdrSize : start+ringHdrSize+n], false, nil
	}
	return nil, false, nil
}

// wait parks until the kernel wakes the ring, the deadline passes, the ring
// is flushed or closed. The readiness test runs before parking and after
// every wake, so a wakeup between take and park is not lost: the netpoller
// keeps an edge that came while nobody waited for the next wait.
func (r *ring) wait() error {
	err := r.conn.Read(func(uintptr) bool {
		return atomic.LoadUintptr(r.prodPos) != r.next || r.flushed.Load() || r.closed.Load()
	})
	switch {
	case r.closed.Load():
		return ErrClosed
	case err == nil, r.flushed.Load():
		return nil
	}
	return err // os.ErrDeadlineExceeded
}

// pending reports the bytes written to the ring past what was read. Only
// the reader calls it.
func (r *ring) pending() int { return int(atomic.LoadUintptr(r.prodPos) - r.next) }

// setDeadline bounds the next waits; the zero time means none. After a
// flush it does nothing: the flush's deadline in the past stays.
func (r *ring) setDeadline(t time.Time) {
	if !r.flushed.Load() {
		r.file.SetReadDeadline(t)
	}
}

// flush makes a waiting or next read return what the ring holds and then
// ErrFlushed. The flag is set before the deadline, and the wait's
// readiness test reads it: a reader that missed the flag in setDeadline
// either set its deadline before this one, which then ends its wait, or
// finds the flag before it parks.
func (r *ring) flush() {
	r.flushed.Store(true)
	r.file.SetReadDeadline(time.Now())
}

// close wakes a waiting read with ErrClosed and unmaps the ring once no
// read runs.
func (r *ring) close() error {
	if r.closed.Swap(true) {
		return nil
	}
	err := r.file.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unmap()
	return err
}

func (r *ring) unmap() {
	if r.dataPages != nil {
		unix.Munmap(r.dataPages)
	}
	if r.consPage != nil {
		unix.Munmap(r.consPage)
	}
	r.dataPages, r.consPage, r.data = nil, nil, nil
}
