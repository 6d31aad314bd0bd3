package agent

import (
	"bufio"
	"debug/elf"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/uprobe"
)

// stringAtZero are the error types whose pointed-to struct starts with the
// message string, so the BPF side's bounded read of that string is their
// text.
var stringAtZero = map[string]bool{
	"*errors.errorString": true,
	"*fmt.wrapError":      true,
	"*fmt.wrapErrors":     true,
}

// converter turns ring events into call records.
type converter struct {
	names []string
	bin   *symbols.Binary
	tr    *uprobe.Tracer
	pid   int

	mu     sync.Mutex
	panics map[uint64]panicValue // goid -> the value it is panicking with
	bias   uint64                // load bias of a PIE target
	// extra holds per-function outcomes of calls closed in user space
	// (open at the end), which the kernel counters do not include.
	extra []extraCounts
}

type panicValue struct {
	typ, text string
	truncated bool
}

type extraCounts struct {
	calls, panics, unfinished, totalNs, maxNs uint64
	hist                                      [record.HistBuckets]uint64
}

// newConverter must be called while the target is alive and its binary
// mapped (a program started by Run is held right after execve): the load
// bias of a PIE target is read from its memory map now, since its events may
// be decoded after it exited.
func newConverter(names []string, bin *symbols.Binary, tr *uprobe.Tracer, pid int) (*converter, error) {
	c := &converter{
		names: names, bin: bin, tr: tr, pid: pid,
		panics: map[uint64]panicValue{},
		extra:  make([]extraCounts, len(names)),
	}
	if bin.PIE {
		b, err := loadBias(pid, bin.Path)
		if err != nil {
			return nil, fmt.Errorf("pid %d: find where its executable is mapped: %w", pid, err)
		}
		c.bias = b
	}
	return c, nil
}

func (c *converter) name(id uint32) string {
	if int(id) < len(c.names) {
		return c.names[id]
	}
	return fmt.Sprintf("unknown#%d", id)
}

// call converts an ok- or error-lane call event.
func (c *converter) call(ev *uprobe.Event) record.Call {
	r := record.Call{
		ID: ev.ID, ParentID: ev.ParentID, PID: ev.PID, GoID: ev.GoID,
		Function: c.name(ev.FuncID),
		Start:    c.tr.WallNs(ev.StartMono),
		Duration: int64(ev.EndMono - ev.StartMono),
		Status:   record.Status(ev.Status),
	}
	switch r.Status {
	case record.StatusError:
		r.ErrorType = c.typeOfItab(ev.TypeAddr)
		if stringAtZero[r.ErrorType] {
			r.Error, r.ErrorTruncated = text(ev.Text), ev.Truncated
		}
	case record.StatusPanic:
		c.mu.Lock()
		pv, ok := c.panics[ev.GoID]
		c.mu.Unlock()
		if ok {
			r.ErrorType, r.Error, r.ErrorTruncated = pv.typ, pv.text, pv.truncated
		}
	}
	return r
}

// panicValue remembers the value a goroutine is panicking with, for the
// frames the panic unwinds.
func (c *converter) panicValue(ev *uprobe.Event) {
	pv := panicValue{typ: "panic"}
	// A string value, and an error whose struct starts with its message,
	// both put a string header behind the data pointer.
	if len(ev.Text) > 0 && (ev.Word1 == uint64(len(ev.Text)) || ev.Truncated) && utf8.Valid(ev.Text) {
		pv.text, pv.truncated = string(ev.Text), ev.Truncated
	} else {
		pv.text = fmt.Sprintf("panic value at 0x%x (type not readable)", ev.DataAddr)
	}
	c.mu.Lock()
	c.panics[ev.GoID] = pv
	c.mu.Unlock()
}

// open converts a frame still open at the end of the trace.
func (c *converter) open(f *uprobe.OpenFrame) record.Call {
	end := max(f.LastSeenMono, f.StartMono)
	r := record.Call{
		ID: f.ID, ParentID: f.ParentID, PID: f.PID, GoID: f.GoID,
		Function: c.name(f.FuncID),
		Start:    c.tr.WallNs(f.StartMono),
		Duration: int64(end - f.StartMono),
		Status:   record.StatusUnfinished,
	}
	if f.Panicking {
		r.Status = record.StatusPanic
		c.mu.Lock()
		if pv, ok := c.panics[f.GoID]; ok {
			r.ErrorType, r.Error, r.ErrorTruncated = pv.typ, pv.text, pv.truncated
		}
		c.mu.Unlock()
	}
	return r
}

// addOpen counts the frames closed in user space into the aggregates.
func (c *converter) addOpen(open []uprobe.OpenFrame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range open {
		if int(f.FuncID) >= len(c.extra) {
			continue
		}
		e := &c.extra[f.FuncID]
		d := max(f.LastSeenMono, f.StartMono) - f.StartMono
		e.calls++
		if f.Panicking {
			e.panics++
		} else {
			e.unfinished++
		}
		e.totalNs += d
		e.maxNs = max(e.maxNs, d)
		e.hist[log2Bucket(d)]++
	}
}

// log2Bucket matches the BPF side: bucket b holds 2^(b-1) <= d < 2^b.
func log2Bucket(d uint64) int {
	b := 0
	for d > 0 {
		d >>= 1
		b++
	}
	return min(b, record.HistBuckets-1)
}

func text(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// typeOfItab names the dynamic type behind an itab address.
func (c *converter) typeOfItab(addr uint64) string {
	if addr == 0 {
		return ""
	}
	static := addr - c.bias
	if n, ok := c.bin.Itabs[static]; ok {
		return n
	}
	return fmt.Sprintf("itab@0x%x", static)
}

// loadBias finds how far a PIE executable was moved when mapped in pid:
// where its mapping at file offset 0 starts, less the address the first
// PT_LOAD segment was linked at (Go links amd64 PIE at 0x400000, not 0).
func loadBias(pid int, exe string) (uint64, error) {
	ef, err := elf.Open(exe)
	if err != nil {
		return 0, err
	}
	linked := ^uint64(0)
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && p.Off == 0 {
			linked = min(linked, p.Vaddr&^(p.Align-1))
		}
	}
	ef.Close()
	if linked == ^uint64(0) {
		return 0, fmt.Errorf("%s: no PT_LOAD segment at file offset 0", exe)
	}
	real, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[2] != "00000000" {
			continue
		}
		path := strings.Join(fields[5:], " ")
		if path != real && path != exe {
			continue
		}
		lo, _, _ := strings.Cut(fields[0], "-")
		start, err := strconv.ParseUint(lo, 16, 64)
		if err != nil {
			return 0, err
		}
		return start - linked, nil
	}
	return 0, fmt.Errorf("pid %d: no mapping of %s", pid, exe)
}
