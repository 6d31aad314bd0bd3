package otlptest

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// LeanSpan is what a lean receiver keeps of a span.
type LeanSpan struct {
	CallID uint64 // the obs_agent.call_id attribute
	Name   string
	Error  bool // status ERROR
}

// NewLeanReceiver starts a receiver for floods: it reads each span
// straight from the wire format and keeps only its id, call id, name and
// status (Lean returns them; Snapshot and Check see nothing). A receiver
// that keeps every decoded message (about 1 KB a span) made the test
// process's allocations and garbage collection, on the machine the agent
// shares, the bottleneck of a flood of a few hundred thousand spans.
func NewLeanReceiver(t testing.TB) *Receiver {
	return newReceiver(t, false, true)
}

// Lean returns the spans a lean receiver accepted by span id, and how
// many arrived more than once.
func (r *Receiver) Lean() (map[[8]byte]LeanSpan, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[[8]byte]LeanSpan, len(r.lean))
	for k, v := range r.lean {
		out[k] = v
	}
	return out, r.got.Dups
}

// leanSpan is one decoded span with its id.
type leanSpan struct {
	id [8]byte
	LeanSpan
}

var errWire = errors.New("malformed OTLP request")

// fields calls f for every field of the message b.
func fields(b []byte, f func(num protowire.Number, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errWire
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errWire
		}
		b = b[n:]
		if err := f(num, v, x); err != nil {
			return err
		}
	}
	return nil
}

// decodeLean reads the spans of an ExportTraceServiceRequest
// (resource_spans 1 → scope_spans 2 → spans 2; span: span_id 2, name 5,
// attributes 9 (key 1, value 2 → int_value 3), status 15 → code 3).
func decodeLean(raw []byte, names map[string]string) ([]leanSpan, error) {
	var out []leanSpan
	err := fields(raw, func(num protowire.Number, rs []byte, _ uint64) error {
		if num != 1 {
			return nil
		}
		return fields(rs, func(num protowire.Number, ss []byte, _ uint64) error {
			if num != 2 {
				return nil
			}
			return fields(ss, func(num protowire.Number, sp []byte, _ uint64) error {
				if num != 2 {
					return nil
				}
				var s leanSpan
				err := fields(sp, func(num protowire.Number, v []byte, _ uint64) error {
					switch num {
					case 2:
						if len(v) != 8 {
							return errWire
						}
						copy(s.id[:], v)
					case 5:
						n, ok := names[string(v)]
						if !ok {
							n = string(v)
							names[n] = n
						}
						s.Name = n
					case 9:
						return leanCallID(v, &s.CallID)
					case 15:
						return fields(v, func(num protowire.Number, _ []byte, x uint64) error {
							if num == 3 && x == 2 {
								s.Error = true
							}
							return nil
						})
					}
					return nil
				})
				out = append(out, s)
				return err
			})
		})
	})
	return out, err
}

// leanCallID reads the call id from an attribute, if it is that one.
func leanCallID(kv []byte, id *uint64) error {
	var key, val []byte
	if err := fields(kv, func(num protowire.Number, v []byte, _ uint64) error {
		switch num {
		case 1:
			key = v
		case 2:
			val = v
		}
		return nil
	}); err != nil || string(key) != attrCallID {
		return err
	}
	return fields(val, func(num protowire.Number, _ []byte, x uint64) error {
		if num == 3 {
			*id = x
		}
		return nil
	})
}
