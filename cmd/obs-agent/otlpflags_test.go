package main

import (
	"strings"
	"testing"
)

// TestOTLPFlags: the endpoint comes from --otlp-endpoint, else the
// standard variables; flags win over the environment; without any
// endpoint there is no sink, and the other OTLP flags are refused.
func TestOTLPFlags(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	cases := []struct {
		name      string
		f         otlpFlags
		getenv    func(string) string
		endpoint  string // "" = no sink
		service   string
		headers   map[string]string
		compress  string // "" = left to the exporter (gzip)
		wantError string
	}{
		{name: "none", getenv: env()},
		{name: "flag", f: otlpFlags{endpoint: "http://c:4318"}, getenv: env(), endpoint: "http://c:4318/v1/traces"},
		{name: "env", getenv: env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://e:4318/", "OTEL_SERVICE_NAME", "svc",
			"OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=x%20y"),
			endpoint: "http://e:4318/v1/traces", service: "svc", headers: map[string]string{"a": "1", "b": "x y"}},
		{name: "flags win", f: otlpFlags{endpoint: "https://f/custom", service: "mine", headers: []string{"a=2"}},
			getenv:   env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://e:4318", "OTEL_SERVICE_NAME", "svc", "OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2"),
			endpoint: "https://f/custom", service: "mine", headers: map[string]string{"a": "2", "b": "2"}},
		{name: "bad env endpoint", getenv: env("OTEL_EXPORTER_OTLP_ENDPOINT", "udp://x"), wantError: "OTEL_EXPORTER_OTLP_ENDPOINT: endpoint"},
		{name: "flag overrides a bad env endpoint", f: otlpFlags{endpoint: "http://c:4318"}, getenv: env("OTEL_EXPORTER_OTLP_ENDPOINT", "udp://x"),
			endpoint: "http://c:4318/v1/traces"},
		{name: "header without endpoint", f: otlpFlags{headers: []string{"a=1"}}, getenv: env(), wantError: "need an endpoint"},
		{name: "compression from env", f: otlpFlags{endpoint: "http://c:4318"}, getenv: env("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
			endpoint: "http://c:4318/v1/traces", compress: "none"},
		{name: "compression flag wins", f: otlpFlags{endpoint: "http://c:4318", compress: "gzip"}, getenv: env("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
			endpoint: "http://c:4318/v1/traces", compress: "gzip"},
		{name: "compression without endpoint", f: otlpFlags{compress: "none"}, getenv: env(), wantError: "need an endpoint"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.f.check(c.getenv)
			if c.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantError) {
					t.Fatalf("err = %v, want %q", err, c.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.endpoint == "" {
				if c.f.opts != nil {
					t.Fatalf("sink configured without an endpoint: %+v", c.f.opts)
				}
				return
			}
			o := c.f.opts
			if o == nil || o.Exporter.Endpoint != c.endpoint || o.ServiceName != c.service || o.Exporter.Compression != c.compress {
				t.Fatalf("opts = %+v, want endpoint %s service %q", o, c.endpoint, c.service)
			}
			for k, v := range c.headers {
				if o.Exporter.Headers[k] != v {
					t.Errorf("header %s = %q, want %q (all: %v)", k, o.Exporter.Headers[k], v, o.Exporter.Headers)
				}
			}
			if len(o.Exporter.Headers) != len(c.headers) {
				t.Errorf("headers %v, want %v", o.Exporter.Headers, c.headers)
			}
		})
	}
}
