package errtext

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/uprobe"
)

// maxText bounds a rendered text, like the store's error column.
const maxText = 1024

// Renderer renders captured error values of one binary.
type Renderer struct {
	t    *symbols.Types
	bias uint64 // load bias of a PIE target
}

// NewRenderer renders with the type descriptors of the target's binary.
func NewRenderer(t *symbols.Types, bias uint64) *Renderer { return &Renderer{t: t, bias: bias} }

// mem is the target memory an error's snapshot holds.
type mem []uprobe.Segment

func (m mem) bytes(addr, n uint64) ([]byte, bool) {
	for _, s := range m {
		if addr >= s.Addr && addr-s.Addr <= uint64(len(s.Bytes)) && n <= uint64(len(s.Bytes))-(addr-s.Addr) {
			return s.Bytes[addr-s.Addr : addr-s.Addr+n], true
		}
	}
	return nil, false
}

func (m mem) word(addr uint64) (uint64, bool) {
	b, ok := m.bytes(addr, 8)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b), true
}

// str reads a Go string whose header is at addr; truncated when only a
// prefix of its bytes was captured.
func (m mem) str(addr uint64) (s string, truncated, ok bool) {
	p, ok1 := m.word(addr)
	n, ok2 := m.word(addr + 8)
	if !ok1 || !ok2 {
		return "", false, false
	}
	if n == 0 {
		return "", false, true
	}
	for _, sg := range m {
		if p == sg.Addr {
			b := sg.Bytes
			if uint64(len(b)) > n {
				b = b[:n]
			}
			return string(b), uint64(len(b)) < n, true
		}
	}
	return "", false, false
}

// render is one rendering in progress.
type render struct {
	r         *Renderer
	m         mem
	truncated bool
	steps     int // values rendered, bounded by maxSteps
}

// maxSteps bounds the work of one rendering: a binary's types (wide
// structs of wide structs) must not make it arbitrarily long.
const maxSteps = 4096

// spend counts one value rendered; false once the budget is spent.
func (rd *render) spend() bool {
	rd.steps++
	if rd.steps > maxSteps {
		rd.truncated = true
		return false
	}
	return true
}

// Render renders the error (itab, data) from the segments captured at its
// RET: its dynamic type's name and its text. ok is false when the
// snapshot does not even hold the itab.
func (r *Renderer) Render(segs []uprobe.Segment, itab, data uint64) (typ, text string, truncated, ok bool) {
	rd := &render{r: r, m: mem(segs)}
	tp, ok := rd.m.word(itab + 8)
	if !ok {
		return "", "", false, false
	}
	d, ok := r.t.Desc(tp - r.bias)
	if !ok {
		return "", "", false, false
	}
	text = rd.clip(rd.errorText(d, data, 0))
	return d.Name, text, rd.truncated, true
}

// RenderValue renders a value held in an empty interface (a panic value):
// typ is its type word (run-time address), data its data word. Errors are
// rendered as Render does, other types as Go syntax.
func (r *Renderer) RenderValue(segs []uprobe.Segment, typ, data uint64) (text string, truncated, ok bool) {
	d, ok := r.t.Desc(typ - r.bias)
	if !ok {
		return "", false, false
	}
	rd := &render{r: r, m: mem(segs)}
	return rd.clip(rd.errorText(d, data, 0)), rd.truncated, true
}

// clip makes text valid UTF-8 (target memory may hold any bytes; each run
// of invalid ones becomes U+FFFD, three bytes) and only then bounds it to
// maxText bytes, cut at the start of a rune: bounding first let the
// replacements grow a text to three times the bound (FuzzRender found a
// 1,440-byte text).
func (rd *render) clip(text string) string {
	text = strings.ToValidUTF8(text, "\uFFFD")
	if len(text) <= maxText {
		return text
	}
	cut := maxText
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	rd.truncated = true
	return text[:cut]
}

const maxDepth = 6

// ifaceWords reads the two words of an interface value at addr (itab or
// type, and data); a word the snapshot does not hold marks the text
// truncated.
func (rd *render) ifaceWords(addr uint64) (tab, data uint64, ok bool) {
	tab, ok1 := rd.m.word(addr)
	data, ok2 := rd.m.word(addr + 8)
	if !ok1 || !ok2 {
		rd.truncated = true
		return 0, 0, false
	}
	return tab, data, true
}

// iface renders an error interface value held at addr (itab, data).
func (rd *render) iface(addr uint64, depth int) string {
	tab, data, ok := rd.ifaceWords(addr)
	if !ok {
		return "…"
	}
	if tab == 0 {
		return "<nil>"
	}
	tp, ok := rd.m.word(tab + 8)
	if !ok {
		rd.truncated = true
		return "…"
	}
	d, ok := rd.r.t.Desc(tp - rd.r.bias)
	if !ok {
		rd.truncated = true
		return "…"
	}
	return rd.errorText(d, data, depth+1)
}

// field finds a struct field by name; Go versions move fields around.
func field(d *symbols.TypeDesc, name string) (symbols.Field, bool) {
	for _, f := range d.Fields {
		if f.Name == name {
			return f, true
		}
	}
	return symbols.Field{}, false
}

// errorText renders a value of dynamic type d whose interface data word is
// data, as its Error method would for the types known here, else as Go
// syntax.
func (rd *render) errorText(d *symbols.TypeDesc, data uint64, depth int) string {
	if depth > maxDepth || !rd.spend() {
		rd.truncated = true
		return "…"
	}
	var elem *symbols.TypeDesc
	if d.Kind == symbols.KindPointer {
		elem, _ = rd.r.t.Desc(d.Elem)
	}
	// s reads a string field of the pointee, e an error field.
	s := func(name string) string {
		f, ok := field(elem, name)
		if !ok {
			rd.truncated = true
			return "…"
		}
		v, tr, ok := rd.m.str(data + f.Offset)
		if !ok {
			rd.truncated = true
			return "…"
		}
		rd.truncated = rd.truncated || tr
		return v
	}
	e := func(name string) string {
		f, ok := field(elem, name)
		if !ok {
			rd.truncated = true
			return "…"
		}
		return rd.iface(data+f.Offset, depth)
	}
	ifaceNil := func(name string) bool {
		f, ok := field(elem, name)
		if !ok {
			return true
		}
		w, _ := rd.m.word(data + f.Offset)
		return w == 0
	}
	if elem != nil && data != 0 {
		switch d.Name {
		case "*errors.errorString", "*fmt.wrapError", "*fmt.wrapErrors":
			if _, ok := field(elem, "s"); ok {
				return s("s")
			}
			return s("msg")
		case "*json.SyntaxError":
			return s("msg")
		case "*fs.PathError":
			return s("Op") + " " + s("Path") + ": " + e("Err")
		case "*os.LinkError":
			return s("Op") + " " + s("Old") + " " + s("New") + ": " + e("Err")
		case "*os.SyscallError":
			return s("Syscall") + ": " + e("Err")
		case "*exec.Error":
			return "exec: " + strconv.Quote(s("Name")) + ": " + e("Err")
		case "*url.Error":
			return fmt.Sprintf("%s %q: %s", s("Op"), s("URL"), e("Err"))
		case "*strconv.NumError":
			return "strconv." + s("Func") + ": parsing " + strconv.Quote(s("Num")) + ": " + e("Err")
		case "*net.DNSError":
			t := "lookup " + s("Name")
			if srv := s("Server"); srv != "" {
				t += " on " + srv
			}
			return t + ": " + s("Err")
		case "*net.AddrError":
			t := s("Err")
			if a := s("Addr"); a != "" {
				t = "address " + a + ": " + t
			}
			return t
		case "*net.ParseError":
			return "invalid " + s("Type") + ": " + s("Text")
		case "*net.OpError":
			t := s("Op")
			if n := s("Net"); n != "" {
				t += " " + n
			}
			if !ifaceNil("Source") {
				f, _ := field(elem, "Source")
				t += " " + rd.addr(data+f.Offset)
			}
			if !ifaceNil("Addr") {
				f, _ := field(elem, "Addr")
				if ifaceNil("Source") {
					t += " "
				} else {
					t += "->"
				}
				t += rd.addr(data + f.Offset)
			}
			return t + ": " + e("Err")
		case "*poll.DeadlineExceededError":
			return "i/o timeout"
		case "*errors.joinError":
			return rd.joined(elem, data, depth)
		}
	}
	switch d.Name {
	case "context.deadlineExceededError":
		return "context deadline exceeded"
	case "poll.errNetClosing":
		return "use of closed network connection"
	case "syscall.Errno":
		if v, ok := rd.scalar(d, data); ok {
			return syscall.Errno(v).Error()
		}
	case "base64.CorruptInputError":
		if v, ok := rd.scalar(d, data); ok {
			return "illegal base64 data at input byte " + strconv.FormatInt(int64(v), 10)
		}
	case "runtime.errorString":
		if v, tr, ok := rd.m.str(data); ok {
			rd.truncated = rd.truncated || tr
			return "runtime error: " + v
		}
	case "runtime.plainError":
		if v, tr, ok := rd.m.str(data); ok {
			rd.truncated = rd.truncated || tr
			return v
		}
	}
	return rd.goSyntax(d, data, true, depth)
}

// joined renders errors.Join's value: the texts of its errors, one a line.
func (rd *render) joined(elem *symbols.TypeDesc, data uint64, depth int) string {
	f, ok := field(elem, "errs")
	if !ok {
		return "…"
	}
	p, ok1 := rd.m.word(data + f.Offset)
	n, ok2 := rd.m.word(data + f.Offset + 8)
	if !ok1 || !ok2 {
		rd.truncated = true
		return "…"
	}
	var parts []string
	for i := uint64(0); i < n; i++ {
		if i == 4 {
			rd.truncated = true
			break
		}
		parts = append(parts, rd.iface(p+16*i, depth))
	}
	return strings.Join(parts, "\n")
}

// addr renders a net.Addr interface value (TCP, UDP, IP, Unix addresses).
func (rd *render) addr(at uint64) string {
	tab, _ := rd.m.word(at)
	data, _ := rd.m.word(at + 8)
	tp, ok := rd.m.word(tab + 8)
	if !ok {
		rd.truncated = true
		return "…"
	}
	d, ok := rd.r.t.Desc(tp - rd.r.bias)
	if !ok || d.Kind != symbols.KindPointer {
		rd.truncated = true
		return "…"
	}
	elem, ok := rd.r.t.Desc(d.Elem)
	if !ok {
		return "…"
	}
	switch d.Name {
	case "*net.TCPAddr", "*net.UDPAddr", "*net.IPAddr":
		ipf, _ := field(elem, "IP")
		p, _ := rd.m.word(data + ipf.Offset)
		n, _ := rd.m.word(data + ipf.Offset + 8)
		host := ""
		if n > 0 {
			b, ok := rd.m.bytes(p, n)
			if !ok {
				rd.truncated = true
				return "…"
			}
			host = ipString(b)
		}
		if zf, ok := field(elem, "Zone"); ok {
			if z, _, ok := rd.m.str(data + zf.Offset); ok && z != "" {
				host += "%" + z
			}
		}
		if d.Name == "*net.IPAddr" {
			return host
		}
		pf, _ := field(elem, "Port")
		port, _ := rd.m.word(data + pf.Offset)
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		return host + ":" + strconv.FormatInt(int64(port), 10)
	case "*net.UnixAddr":
		nf, _ := field(elem, "Name")
		v, _, _ := rd.m.str(data + nf.Offset)
		return v
	}
	return rd.goSyntax(d, data, true, 0)
}

// ipString formats a net.IP as net.IP.String does for the common cases.
func ipString(b []byte) string {
	if len(b) == 16 && isV4InV6(b) {
		b = b[12:]
	}
	switch len(b) {
	case 4:
		return fmt.Sprintf("%d.%d.%d.%d", b[0], b[1], b[2], b[3])
	case 16:
		// Longest run of zero groups shortened to "::", as net.IP does.
		best, bestLen := -1, 0
		for i := 0; i < 16; i += 2 {
			j := i
			for j < 16 && b[j] == 0 && b[j+1] == 0 {
				j += 2
			}
			if j-i > bestLen && j-i >= 4 {
				best, bestLen = i, j-i
			}
		}
		var sb strings.Builder
		for i := 0; i < 16; i += 2 {
			if i == best {
				sb.WriteString("::")
				i += bestLen - 2
				continue
			}
			if i > 0 && !strings.HasSuffix(sb.String(), ":") {
				sb.WriteByte(':')
			}
			sb.WriteString(strconv.FormatUint(uint64(b[i])<<8|uint64(b[i+1]), 16))
		}
		return sb.String()
	}
	return fmt.Sprintf("?%x", b)
}

func isV4InV6(b []byte) bool {
	for i := 0; i < 10; i++ {
		if b[i] != 0 {
			return false
		}
	}
	return b[10] == 0xff && b[11] == 0xff
}

// scalar reads an integer-kinded value held in an interface: its data
// word points at it.
func (rd *render) scalar(d *symbols.TypeDesc, data uint64) (uint64, bool) {
	if d.Size == 0 || d.Size > 8 {
		return 0, false
	}
	b, ok := rd.m.bytes(data, d.Size)
	if !ok {
		return 0, false
	}
	var w [8]byte
	copy(w[:], b)
	v := binary.LittleEndian.Uint64(w[:])
	switch d.Kind {
	case symbols.KindInt8:
		v = uint64(int64(int8(v)))
	case symbols.KindInt16:
		v = uint64(int64(int16(v)))
	case symbols.KindInt32:
		v = uint64(int64(int32(v)))
	}
	return v, true
}

// goSyntax renders a value as Go syntax: &main.MyErr{Op:"save", Code:7},
// main.Code(7), main.Msg("text"). inIface: data is an interface's data
// word (the value itself for pointer-shaped types, else its address);
// otherwise data is the value's address.
func (rd *render) goSyntax(d *symbols.TypeDesc, data uint64, inIface bool, depth int) string {
	if depth > maxDepth {
		rd.truncated = true
		return "…"
	}
	if d.Kind == symbols.KindPointer {
		p := data
		if !inIface {
			var ok bool
			if p, ok = rd.m.word(data); !ok {
				rd.truncated = true
				return "…"
			}
		}
		if p == 0 {
			return "(" + d.Name + ")(nil)"
		}
		elem, ok := rd.r.t.Desc(d.Elem)
		if !ok || elem.Kind != symbols.KindStruct {
			return fmt.Sprintf("(%s)(0x%x)", d.Name, p)
		}
		if _, ok := rd.m.bytes(p, min(elem.Size, uint64(uprobe.ErrTextChunk))); !ok && elem.Size > 0 {
			return fmt.Sprintf("(%s)(0x%x)", d.Name, p)
		}
		return "&" + rd.value(elem, p, depth+1)
	}
	if d.DirectIface && inIface {
		return fmt.Sprintf("%s(0x%x)", d.Name, data)
	}
	v := rd.value(d, data, depth)
	switch d.Kind {
	case symbols.KindStruct, symbols.KindArray, symbols.KindSlice:
		return v
	}
	return d.Name + "(" + v + ")"
}

// value renders the value of type d at addr (without the type name for
// scalars, as inside a struct literal).
func (rd *render) value(d *symbols.TypeDesc, addr uint64, depth int) string {
	if depth > maxDepth || !rd.spend() {
		rd.truncated = true
		return "…"
	}
	read := func(n uint64) (uint64, bool) {
		b, ok := rd.m.bytes(addr, n)
		if !ok {
			rd.truncated = true
			return 0, false
		}
		var w [8]byte
		copy(w[:], b)
		return binary.LittleEndian.Uint64(w[:]), true
	}
	switch d.Kind {
	case symbols.KindBool:
		if v, ok := read(1); ok {
			return strconv.FormatBool(v != 0)
		}
	case symbols.KindInt, symbols.KindInt8, symbols.KindInt16, symbols.KindInt32, symbols.KindInt64:
		if v, ok := read(d.Size); ok {
			shift := 64 - 8*d.Size
			return strconv.FormatInt(int64(v<<shift)>>shift, 10)
		}
	case symbols.KindUint, symbols.KindUint8, symbols.KindUint16, symbols.KindUint32, symbols.KindUint64, symbols.KindUintptr:
		if v, ok := read(d.Size); ok {
			if d.Kind == symbols.KindUintptr {
				return fmt.Sprintf("0x%x", v)
			}
			return strconv.FormatUint(v, 10)
		}
	case symbols.KindFloat32:
		if v, ok := read(4); ok {
			return strconv.FormatFloat(float64(math.Float32frombits(uint32(v))), 'g', -1, 32)
		}
	case symbols.KindFloat64:
		if v, ok := read(8); ok {
			return strconv.FormatFloat(math.Float64frombits(v), 'g', -1, 64)
		}
	case symbols.KindString:
		s, tr, ok := rd.m.str(addr)
		if ok {
			rd.truncated = rd.truncated || tr
			if !utf8.ValidString(s) {
				s = strings.ToValidUTF8(s, "\uFFFD")
			}
			return strconv.Quote(s)
		}
		rd.truncated = true
	case symbols.KindStruct:
		parts := make([]string, 0, len(d.Fields))
		for _, f := range d.Fields {
			if rd.steps > maxSteps {
				parts = append(parts, "…")
				break
			}
			fd, ok := rd.r.t.Desc(f.Type)
			if !ok {
				parts = append(parts, f.Name+":…")
				continue
			}
			parts = append(parts, f.Name+":"+rd.value(fd, addr+f.Offset, depth+1))
		}
		return d.Name + "{" + strings.Join(parts, ", ") + "}"
	case symbols.KindPointer:
		return rd.goSyntax(d, addr, false, depth)
	case symbols.KindInterface:
		tab, data, ok := rd.ifaceWords(addr)
		if !ok {
			return "…"
		}
		if tab == 0 {
			return d.Name + "(nil)"
		}
		tp := tab
		if len(d.Methods) > 0 {
			var ok bool
			if tp, ok = rd.m.word(tab + 8); !ok {
				rd.truncated = true
				return "…"
			}
		}
		dd, ok := rd.r.t.Desc(tp - rd.r.bias)
		if !ok {
			rd.truncated = true
			return "…"
		}
		return rd.goSyntax(dd, data, true, depth+1)
	}
	if d.Kind != symbols.KindString {
		rd.truncated = true
	}
	return "…"
}
