package main

import (
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/otlp"
)

func TestExportOTLPFlags(t *testing.T) {
	ok := func() exportOTLPFlags {
		return exportOTLPFlags{db: "/tmp/x.db", since: "2h", batch: 512, timeout: 10 * time.Second, retryFor: time.Minute}
	}
	now := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	env := map[string]string{otlp.EnvEndpoint: "http://env:4318", otlp.EnvHeaders: "a=1,b=2", otlp.EnvServiceName: "svc"}
	getenv := func(k string) string { return env[k] }

	f := ok()
	cfg, x, err := f.options(getenv, now)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Endpoint != "http://env:4318/v1/traces" || cfg.Headers["a"] != "1" || x.ServiceName != "svc" ||
		x.StatePath != "/tmp/x.db.otlp-state" || !x.Since.Equal(now.Add(-2*time.Hour)) || !x.Until.IsZero() {
		t.Errorf("env config: %+v %+v", cfg, x)
	}
	f.endpoint, f.headers, f.serviceName, f.state = "https://flag:443", []string{"a=flag"}, "mine", "/tmp/st"
	cfg, x, err = f.options(getenv, now)
	if err != nil || cfg.Endpoint != "https://flag:443/v1/traces" || cfg.Headers["a"] != "flag" || cfg.Headers["b"] != "2" ||
		x.ServiceName != "mine" || x.StatePath != "/tmp/st" {
		t.Errorf("flags over env: %+v %+v %v", cfg, x, err)
	}

	for _, tc := range []struct {
		mod  func(*exportOTLPFlags)
		flag string
	}{
		{func(f *exportOTLPFlags) { f.since = "" }, "--since"},
		{func(f *exportOTLPFlags) { f.since = "yesterday" }, "--since"},
		{func(f *exportOTLPFlags) { f.until = "3h" }, "--until"},
		{func(f *exportOTLPFlags) { f.batch = 0 }, "--batch"},
		{func(f *exportOTLPFlags) { f.batch = 10001 }, "--batch"},
		{func(f *exportOTLPFlags) { f.timeout = time.Millisecond }, "--timeout"},
		{func(f *exportOTLPFlags) { f.retryFor = -time.Second }, "--retry-for"},
		{func(f *exportOTLPFlags) { f.endpoint = "collector:4318" }, "--endpoint"},
		{func(f *exportOTLPFlags) { f.headers = []string{"novalue"} }, "--header"},
		{func(f *exportOTLPFlags) { f.headers = []string{"k=a\nb"} }, "--header"},
		{func(f *exportOTLPFlags) { f.caFile = "/nonexistent/ca.pem" }, "--ca-file"},
		{func(f *exportOTLPFlags) { f.db = "" }, "--db"},
	} {
		f := ok()
		tc.mod(&f)
		if _, _, err := f.options(getenv, now); err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%+v: error %v, want one naming %s", f, err, tc.flag)
		}
	}
}
