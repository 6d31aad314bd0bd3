package otlp

import (
	commonpb "go.opentelemetry.io/proto/slim/otlp/common/v1"

	"github.com/obs-agent/obs-agent/internal/otlp/otlptest"
)

// attr returns attribute k of kvs, nil when absent.
func attr(kvs []*commonpb.KeyValue, k string) *commonpb.AnyValue { return otlptest.Attr(kvs, k) }
