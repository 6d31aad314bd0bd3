package uprobe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/obs-agent/obs-agent/internal/testutil"
)

// ringRig is a ring buffer map with programs that write to it, run by
// BPF_PROG_TEST_RUN: the kernel writes the records, as it does for the
// tracer's programs.
type ringRig struct {
	m *ebpf.Map
	r *ring
	// loud and quiet copy the 16-byte packet they are run on into the
	// ring, with BPF_RB_FORCE_WAKEUP and BPF_RB_NO_WAKEUP; discard
	// reserves 16 bytes and discards them.
	loud, quiet, discard *ebpf.Program
}

const (
	rbNoWakeup    = 1
	rbForceWakeup = 2
)

func newRingRig(t *testing.T, size uint32) *ringRig {
	t.Helper()
	testutil.RequireRoot(t)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: size})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	g := &ringRig{m: m}
	load := func(insns asm.Instructions) *ebpf.Program {
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL", Instructions: insns})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	output := func(flags int32) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.Mov.Imm(asm.R2, 0),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -16),
			asm.Mov.Imm(asm.R4, 16),
			asm.FnSkbLoadBytes.Call(),
			asm.JNE.Imm(asm.R0, 0, "out"),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -16),
			asm.Mov.Imm(asm.R3, 16),
			asm.Mov.Imm(asm.R4, flags),
			asm.FnRingbufOutput.Call(),
			asm.Return().WithSymbol("out"), // 0, or the helper's error
		}
	}
	g.loud, g.quiet = load(output(rbForceWakeup)), load(output(rbNoWakeup))
	g.discard = load(asm.Instructions{
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Imm(asm.R2, 16),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnRingbufReserve.Call(),
		asm.JEq.Imm(asm.R0, 0, "full"),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.Mov.Imm(asm.R2, rbNoWakeup),
		asm.FnRingbufDiscard.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("full"),
		asm.Return(),
	})
	if g.r, err = newRing(m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.r.close() })
	return g
}

// put runs p on a packet carrying seq and its complement; false when the
// ring had no room.
func (g *ringRig) put(t *testing.T, p *ebpf.Program, seq uint64) bool {
	t.Helper()
	// A socket filter's test run starts the skb past its 14-byte
	// Ethernet header.
	pkt := make([]byte, 14+16)
	binary.LittleEndian.PutUint64(pkt[14:], seq)
	binary.LittleEndian.PutUint64(pkt[22:], ^seq)
	ret, err := p.Run(&ebpf.RunOptions{Data: pkt})
	if err != nil {
		t.Fatal(err)
	}
	switch int32(ret) {
	case 0:
		return true
	case -int32(unix.EAGAIN), 1: // output's and discard's "full"
		return false
	}
	t.Fatalf("the writing program failed: %d", int32(ret))
	return false
}

// seqOf checks a record written by put and returns its seq.
func seqOf(t *testing.T, rec []byte) uint64 {
	t.Helper()
	if len(rec) != 16 {
		t.Fatalf("record of %d bytes, want 16", len(rec))
	}
	seq := binary.LittleEndian.Uint64(rec)
	if binary.LittleEndian.Uint64(rec[8:]) != ^seq {
		t.Fatalf("record %x: its halves do not match", rec)
	}
	return seq
}

// readAsync reads one record on another goroutine; the result comes on
// the channel, the record copied.
func (g *ringRig) readAsync() <-chan readResult {
	done := make(chan readResult, 1)
	go func() {
		rec, err := g.r.read()
		done <- readResult{append([]byte(nil), rec...), err}
	}()
	return done
}

type readResult struct {
	rec []byte
	err error
}

// result waits for a readAsync, a minute at most.
func result(t *testing.T, done <-chan readResult, what string) readResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(time.Minute):
		t.Fatalf("%s: the reader did not return within a minute", what)
	}
	return readResult{}
}

// waitParked returns once a goroutine waits in the ring's netpoller wait,
// as runtime.Stack shows it: so that what the test does next happens to
// a parked reader.
func waitParked(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); runtime.Gosched() {
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "[IO wait") && strings.Contains(g, "(*ring).wait") {
				return
			}
		}
	}
	t.Fatal("the reader never parked in the ring's wait")
}

// Records are read in order, whole, across many wraps of a one-page ring
// (24-byte records do not divide it, so some straddle its end), with
// discarded records skipped; the reader is woken by the kernel alone (no
// deadline) and, for records written without a wakeup, by its poll.
func TestRingReadsInOrder(t *testing.T) {
	g := newRingRig(t, uint32(os.Getpagesize()))
	const n = 20000
	got := make(chan error, 1)
	go func() {
		var want uint64
		for want < n {
			g.r.setDeadline(time.Now().Add(5 * time.Millisecond))
			rec, err := g.r.read()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if err != nil {
				got <- err
				return
			}
			if len(rec) != 16 || binary.LittleEndian.Uint64(rec) != want || binary.LittleEndian.Uint64(rec[8:]) != ^want {
				got <- fmt.Errorf("record %d: %x, want seq %d", want, rec, want)
				return
			}
			want++
		}
		got <- nil
	}()
	// full: the reader catches up, unless it gave up.
	full := func() {
		select {
		case err := <-got:
			t.Fatalf("the reader stopped: %v", err)
		default:
			runtime.Gosched()
		}
	}
	for seq := uint64(0); seq < n; {
		if seq%7 == 0 && !g.put(t, g.discard, 0) {
			full()
			continue
		}
		p := g.loud
		if seq%3 != 0 {
			p = g.quiet
		}
		if !g.put(t, p, seq) {
			full()
			continue
		}
		seq++
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the reader did not get every record within a minute")
	}
	if p := g.r.pending(); p != 0 {
		t.Fatalf("%d bytes pending after every record was read", p)
	}
}

// A parked reader is woken by the kernel's wakeup of the ring, through the
// netpoller, with no deadline set.
func TestRingWakesParkedReader(t *testing.T) {
	g := newRingRig(t, uint32(os.Getpagesize()))
	done := g.readAsync()
	waitParked(t)
	if !g.put(t, g.loud, 42) {
		t.Fatal("an empty ring had no room")
	}
	r := result(t, done, "woken by the kernel")
	if r.err != nil || seqOf(t, r.rec) != 42 {
		t.Fatalf("woken by the kernel: %v", r.err)
	}
}

// A record written without a wakeup reaches a parked reader at its
// deadline: Read returns os.ErrDeadlineExceeded, and the next Read the
// record.
func TestRingDeadline(t *testing.T) {
	g := newRingRig(t, uint32(os.Getpagesize()))
	g.r.setDeadline(time.Now().Add(100 * time.Millisecond))
	done := g.readAsync()
	waitParked(t)
	if !g.put(t, g.quiet, 7) {
		t.Fatal("an empty ring had no room")
	}
	if r := result(t, done, "deadline"); !errors.Is(r.err, os.ErrDeadlineExceeded) {
		t.Fatalf("a record without a wakeup ended the wait: %v", r.err)
	}
	rec, err := g.r.read()
	if err != nil || seqOf(t, rec) != 7 {
		t.Fatalf("after the deadline: %v", err)
	}
	if _, err := g.r.read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("an empty ring past its deadline: %v", err)
	}
}

// Flush wakes a parked reader; it returns what the ring holds, then
// ErrFlushed, and setting a deadline afterwards does not make it wait.
func TestRingFlush(t *testing.T) {
	g := newRingRig(t, uint32(os.Getpagesize()))
	done := g.readAsync()
	waitParked(t)
	for seq := uint64(1); seq <= 3; seq++ {
		if !g.put(t, g.quiet, seq) {
			t.Fatal("no room for 3 records")
		}
	}
	g.r.flush()
	if r := result(t, done, "flushed"); r.err != nil || seqOf(t, r.rec) != 1 {
		t.Fatalf("the parked reader, flushed: %v", r.err)
	}
	for seq := uint64(2); seq <= 3; seq++ {
		if rec, err := g.r.read(); err != nil || seqOf(t, rec) != seq {
			t.Fatalf("after the flush, record %d: %v", seq, err)
		}
	}
	g.r.setDeadline(time.Now().Add(time.Hour))
	if _, err := g.r.read(); !errors.Is(err, ErrFlushed) {
		t.Fatalf("a flushed, empty ring: %v", err)
	}
}

// Close wakes a parked reader with ErrClosed, and reads after it fail the
// same way (the ring's memory is unmapped).
func TestRingClose(t *testing.T) {
	g := newRingRig(t, uint32(os.Getpagesize()))
	done := g.readAsync()
	waitParked(t)
	if err := g.r.close(); err != nil {
		t.Fatal(err)
	}
	if r := result(t, done, "closed"); !errors.Is(r.err, ErrClosed) {
		t.Fatalf("the parked reader, closed: %v", r.err)
	}
	if _, err := g.r.read(); !errors.Is(err, ErrClosed) {
		t.Fatalf("a read after close: %v", err)
	}
}

func TestNewRingRejectsOtherMaps(t *testing.T) {
	testutil.RequireRoot(t)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := newRing(m); err == nil || !strings.Contains(err.Error(), "not a ring buffer") {
		t.Fatalf("an array map: %v", err)
	}
}
