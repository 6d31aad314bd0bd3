package uprobe

import (
	"fmt"
	"unsafe"
)

// The read plans that bpf/errtext.h runs at an error's RET to capture the
// error's value (see that header). The kinds come from the C enum through
// bpf2go.
const (
	ErrTextStr    = uint8(obsErrtextKindERRTEXT_STR)
	ErrTextPtr    = uint8(obsErrtextKindERRTEXT_PTR)
	ErrTextIface  = uint8(obsErrtextKindERRTEXT_IFACE)
	ErrTextEface  = uint8(obsErrtextKindERRTEXT_EFACE)
	ErrTextBytes  = uint8(obsErrtextKindERRTEXT_BYTES)
	ErrTextIfaces = uint8(obsErrtextKindERRTEXT_IFACES)
)

// ErrTextFields and ErrTextChunk bound a plan: followed fields per type,
// and bytes copied per read.
const (
	ErrTextFields = int(obsErrtextLimitERRTEXT_FIELDS)
	ErrTextChunk  = int(obsErrtextLimitERRTEXT_CHUNK)
	errTextSegHdr = int(unsafe.Sizeof(obsErrtextSeg{}))
)

// ErrTextField is a field of a value that the plan follows.
type ErrTextField struct {
	Off  uint16
	Kind uint8  // ErrTextStr, ...
	Elem uint64 // ErrTextPtr: the pointee's type (run-time address); ErrTextBytes: element size
}

// ErrTextNode is the read plan of one type.
type ErrTextNode struct {
	Size   uint16 // bytes of the value to copy, at most ErrTextChunk
	Direct bool   // pointer type: an interface's data word is the pointer
	Elem   uint64 // Direct: the pointee's type (run-time address)
	Fields []ErrTextField
}

func (t *Tracer) loadErrText(nodes map[uint64]ErrTextNode) error {
	if len(nodes) == 0 {
		return nil
	}
	if max := int(t.objs.ErrtextNodes.MaxEntries()); len(nodes) > max {
		return fmt.Errorf("attach: %d error read plans, the map holds %d", len(nodes), max)
	}
	keys := make([]uint64, 0, len(nodes))
	vals := make([]obsErrtextNode, 0, len(nodes))
	for k, n := range nodes {
		if len(n.Fields) > ErrTextFields || int(n.Size) > ErrTextChunk {
			return fmt.Errorf("attach: error read plan of type %#x is too big", k)
		}
		v := obsErrtextNode{Size: n.Size, Nfields: uint8(len(n.Fields)), Elem: n.Elem}
		if n.Direct {
			v.Flags = uint8(obsErrtextFlagERRTEXT_DIRECT)
		}
		for i, f := range n.Fields {
			v.Fields[i] = obsErrtextField{Off: f.Off, Kind: f.Kind, Elem: f.Elem}
		}
		keys = append(keys, k)
		vals = append(vals, v)
	}
	if _, err := t.objs.ErrtextNodes.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("attach: fill error read plans: %w", err)
	}
	return nil
}

// Segment is memory of the target copied at an error's RET.
type Segment struct {
	Addr  uint64
	Bytes []byte
}

// Segments splits an event's snapshot into its segments; they alias the
// event's buffer.
func (ev *Event) Segments() []Segment {
	var out []Segment
	b := ev.Snapshot
	for len(b) >= errTextSegHdr {
		h := (*obsErrtextSeg)(unsafe.Pointer(&b[0]))
		n := int(h.Len)
		if n > len(b)-errTextSegHdr {
			break
		}
		out = append(out, Segment{Addr: h.Addr, Bytes: b[errTextSegHdr : errTextSegHdr+n]})
		adv := errTextSegHdr + (n+7)&^7
		if adv > len(b) {
			break
		}
		b = b[adv:]
	}
	return out
}
