package agent

import (
	"bufio"
	"debug/elf"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/obs-agent/obs-agent/internal/errtext"
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
	// names is the session's function table, which a reload may grow
	// (update.go): loaded for each record.
	names *atomic.Pointer[[]string]
	bin   *symbols.Binary
	tr    *uprobe.Tracer
	pid   int
	// types names the dynamic types of panic values; nil when the
	// binary's type data could not be read.
	types *symbols.Types
	// errs renders the error values captured at RET (bpf/errtext.h).
	errs *errtext.Renderer

	mu sync.Mutex
	// panics maps a goroutine id to the value it last panicked with, for
	// the frames that panic unwinds. Nothing says when a recovered
	// goroutine is done with it, so the table is bounded: past
	// maxPanics entries the oldest is forgotten (its late frames would
	// then be recorded as panics without the value's text).
	panics     map[pidGoid]panicValue
	panicOrder []pidGoid // in insertion order, oldest first
	bias       uint64    // load bias of a PIE target
	// pieFile: a PIE file traced in every process, each at its own bias
	// (the tracer's Bias); biases and renderers by pid and by bias.
	pieFile   bool
	biasMu    sync.Mutex
	biases    map[uint32]uint64
	renderers map[uint64]*errtext.Renderer
	// extra holds per-function outcomes of calls closed in user space
	// (open at the end), which the kernel counters do not include.
	extra []extraCounts
}

// pidGoid names a goroutine: goroutine ids repeat across the processes
// of a file target.
type pidGoid struct {
	pid  uint32
	goid uint64
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
func newConverter(names *atomic.Pointer[[]string], bin *symbols.Binary, tr *uprobe.Tracer, pid int) (*converter, error) {
	c := &converter{
		names: names, bin: bin, tr: tr, pid: pid,
		panics: map[pidGoid]panicValue{},
		extra:  make([]extraCounts, len(*names.Load())),
	}
	c.pieFile = bin.PIE && pid == 0
	if c.pieFile {
		c.biases, c.renderers = map[uint32]uint64{}, map[uint64]*errtext.Renderer{}
	}
	if bin.PIE && !c.pieFile {
		b, err := loadBias(pid, bin.Path)
		if err != nil {
			return nil, fmt.Errorf("pid %d: find where its executable is mapped: %w", pid, err)
		}
		c.bias = b
	}
	// Read when the binary was opened: the file may be gone when events
	// arrive.
	c.types = bin.Types()
	c.errs = errtext.NewRenderer(c.types, c.bias)
	return c, nil
}

// maxBiases bounds the pids whose bias the converter remembers.
const maxBiases = 1 << 12

// at is how process pid's addresses read: its load bias, and the renderer
// of error values for it. A process of a PIE file whose bias is unknown
// (its records came before any traced entry) reads as bias 0: its types
// are then not found, and named by address.
func (c *converter) at(pid uint32) (uint64, *errtext.Renderer) {
	if !c.pieFile {
		return c.bias, c.errs
	}
	c.biasMu.Lock()
	defer c.biasMu.Unlock()
	b, ok := c.biases[pid]
	if !ok {
		if b, ok = c.tr.Bias(pid); !ok {
			return 0, c.errs
		}
		if len(c.biases) >= maxBiases {
			clear(c.biases)
			clear(c.renderers)
		}
		c.biases[pid] = b
	}
	r := c.renderers[b]
	if r == nil {
		r = errtext.NewRenderer(c.types, b)
		c.renderers[b] = r
	}
	return b, r
}

func (c *converter) name(id uint32) string {
	if names := *c.names.Load(); int(id) < len(names) {
		return names[id]
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
		bias, errs := c.at(ev.PID)
		if len(ev.Snapshot) > 0 && c.types != nil {
			typ, txt, tr, ok := errs.Render(ev.Segments(), ev.TypeAddr, ev.DataAddr)
			if ok {
				r.ErrorType, r.Error, r.ErrorTruncated = typ, txt, tr
				break
			}
		}
		// The plain record: the ring had no room for the snapshot.
		r.ErrorType = c.typeOfItab(ev.TypeAddr, bias)
		if stringAtZero[r.ErrorType] {
			r.Error, r.ErrorTruncated = text(ev.Text), ev.Truncated
		}
	case record.StatusPanic:
		c.withPanic(&r)
	}
	return r
}

// maxPanics bounds the panic table (see converter.panics).
const maxPanics = 1 << 16

// withPanic fills a panicked call's type and text from the value its
// goroutine panicked with.
func (c *converter) withPanic(r *record.Call) {
	c.mu.Lock()
	pv, ok := c.panics[pidGoid{r.PID, r.GoID}]
	c.mu.Unlock()
	if ok {
		r.ErrorType, r.Error, r.ErrorTruncated = pv.typ, pv.text, pv.truncated
	}
}

// panicValue remembers the value a goroutine is panicking with, for the
// frames the panic unwinds.
func (c *converter) panicValue(ev *uprobe.Event) {
	pv := c.describePanic(ev)
	c.mu.Lock()
	defer c.mu.Unlock()
	k := pidGoid{ev.PID, ev.GoID}
	if _, ok := c.panics[k]; !ok {
		if len(c.panicOrder) >= maxPanics {
			delete(c.panics, c.panicOrder[0])
			c.panicOrder = c.panicOrder[1:]
		}
		c.panicOrder = append(c.panicOrder, k)
	}
	c.panics[k] = pv
}

// describePanic names a panic value's dynamic type from its descriptor and
// formats what can be read without running code: the text of a string, the
// value of a number or bool (the eface's data word points at the value,
// which the BPF side read as word0), and for anything else what the
// snapshot of the value gives: an error's Error() text for the types
// internal/errtext knows, Go syntax for the others.
func (c *converter) describePanic(ev *uprobe.Event) panicValue {
	if ev.TypeAddr == 0 {
		// panic(nil): the probe at gopanic's entry sees the nil before
		// Go 1.21+ replaces it with a *runtime.PanicNilError.
		return panicValue{typ: "nil", text: "panic(nil)"}
	}
	bias, errs := c.at(ev.PID)
	ty, ok := c.types.Lookup(ev.TypeAddr - bias)
	if !ok {
		// The type data could not be read: fall back on the shape of the
		// value. A string, and an error whose struct starts with its
		// message, both put a string header behind the data pointer; this
		// cannot tell them apart, nor from another struct that starts
		// with a string.
		pv := panicValue{typ: "panic"}
		if c.looksLikeString(ev) && utf8.Valid(ev.Text) {
			pv.text, pv.truncated = string(ev.Text), ev.Truncated
		} else {
			pv.text = fmt.Sprintf("panic value at 0x%x (type not readable)", ev.DataAddr)
		}
		return pv
	}
	pv := panicValue{typ: ty.Name}
	w := ev.Word0
	// (A snapshot may be empty and still tell: a zero-size value.)
	if strings.Contains(ty.Name, ".") && ev.Snapshot != nil {
		// A named type of a package (syscall.Errno, runtime.errorString,
		// main.Code): rendered as its Error() for the types
		// internal/errtext knows, else as Go syntax, like a returned error.
		if txt, tr, ok := errs.RenderValue(ev.Segments(), ev.TypeAddr, ev.DataAddr); ok {
			pv.text, pv.truncated = txt, tr
			return pv
		}
	}
	switch ty.Kind {
	case symbols.KindString:
		if ev.Word1 == 0 {
			break
		}
		if c.looksLikeString(ev) {
			pv.text, pv.truncated = text(ev.Text), ev.Truncated
		}
	case symbols.KindBool:
		pv.text = strconv.FormatBool(w&0xff != 0)
	case symbols.KindInt, symbols.KindInt64:
		pv.text = strconv.FormatInt(int64(w), 10)
	case symbols.KindInt8:
		pv.text = strconv.FormatInt(int64(int8(w)), 10)
	case symbols.KindInt16:
		pv.text = strconv.FormatInt(int64(int16(w)), 10)
	case symbols.KindInt32:
		pv.text = strconv.FormatInt(int64(int32(w)), 10)
	case symbols.KindUint, symbols.KindUint64, symbols.KindUintptr:
		pv.text = strconv.FormatUint(w, 10)
	case symbols.KindUint8:
		pv.text = strconv.FormatUint(uint64(uint8(w)), 10)
	case symbols.KindUint16:
		pv.text = strconv.FormatUint(uint64(uint16(w)), 10)
	case symbols.KindUint32:
		pv.text = strconv.FormatUint(uint64(uint32(w)), 10)
	case symbols.KindFloat32:
		pv.text = strconv.FormatFloat(float64(math.Float32frombits(uint32(w))), 'g', -1, 32)
	case symbols.KindFloat64:
		pv.text = strconv.FormatFloat(math.Float64frombits(w), 'g', -1, 64)
	case symbols.KindComplex64:
		pv.text = fmt.Sprint(complex(math.Float32frombits(uint32(w)), math.Float32frombits(uint32(w>>32))))
	case symbols.KindComplex128:
		pv.text = fmt.Sprint(complex(math.Float64frombits(w), math.Float64frombits(ev.Word1)))
	default:
		// Errors, structs, pointers: rendered from the snapshot of the
		// value (bpf/errtext.h) as Error() or Go syntax.
		if ev.Snapshot != nil {
			if txt, tr, ok := errs.RenderValue(ev.Segments(), ev.TypeAddr, ev.DataAddr); ok {
				pv.text, pv.truncated = txt, tr
				break
			}
		}
		if stringAtZero[ty.Name] && c.looksLikeString(ev) {
			pv.text, pv.truncated = text(ev.Text), ev.Truncated
		}
	}
	return pv
}

// looksLikeString reports whether the event's text is the whole string
// whose header (word0, word1) the BPF side read behind the data pointer.
func (c *converter) looksLikeString(ev *uprobe.Event) bool {
	return len(ev.Text) > 0 && (ev.Word1 == uint64(len(ev.Text)) || ev.Truncated)
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
		c.withPanic(&r)
	}
	return r
}

// addOpen counts the frames closed in user space into the aggregates.
func (c *converter) addOpen(open []uprobe.OpenFrame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range open {
		if int(f.FuncID) >= len(c.extra) {
			// A function a reload added (update.go).
			c.extra = append(c.extra, make([]extraCounts, int(f.FuncID)+1-len(c.extra))...)
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
func log2Bucket(d uint64) int { return record.HistBucket(d) }

func text(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// typeOfItab names the dynamic type behind an itab address of a process
// loaded at bias.
func (c *converter) typeOfItab(addr, bias uint64) string {
	if addr == 0 {
		return ""
	}
	static := addr - bias
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
