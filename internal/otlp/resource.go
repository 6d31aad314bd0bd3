package otlp

import (
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// ResourceField is p's resource as the leading field of a ResourceSpans,
// for ReplaceResource.
func ResourceField(p *Process) []byte {
	res, err := proto.Marshal(p.Resource())
	if err != nil {
		panic("otlp: marshal a resource: " + err.Error()) // plain strings and ints: never
	}
	return appendBytes(nil, fRSResource, res)
}

// ReplaceResource appends to dst the export request req (one
// ResourceSpans, as Encoder.Bytes gives it) with its resource replaced by
// field (ResourceField). It lets one encoder, whose span-id memo is
// valid for every process of a session, write the spans of each of the
// session's processes under the resource of that process: the resource is
// the only part of the request that differs.
func ReplaceResource(dst, req, field []byte) ([]byte, error) {
	num, typ, n := protowire.ConsumeTag(req)
	if n < 0 || num != fReqResourceSpans || typ != protowire.BytesType {
		return dst, errors.New("otlp: not an export request of resource spans")
	}
	rs, m := protowire.ConsumeBytes(req[n:])
	if m < 0 || n+m != len(req) {
		return dst, errors.New("otlp: an export request of more than one resource spans")
	}
	num, typ, k := protowire.ConsumeTag(rs)
	if k < 0 || num != fRSResource || typ != protowire.BytesType {
		return dst, errors.New("otlp: resource spans without a leading resource")
	}
	_, l := protowire.ConsumeBytes(rs[k:])
	if l < 0 {
		return dst, errors.New("otlp: truncated resource")
	}
	rest := rs[k+l:]
	dst = protowire.AppendTag(dst, fReqResourceSpans, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(len(field)+len(rest)))
	dst = append(dst, field...)
	return append(dst, rest...), nil
}
