package otlp

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/otlp/otlptest"
	"github.com/obs-agent/obs-agent/internal/safefile"
)

func TestConfigFromEnv(t *testing.T) {
	for _, tc := range []struct {
		env      map[string]string
		endpoint string
		headers  map[string]string
		compress string
		err      string
	}{
		{env: nil, endpoint: DefaultEndpoint},
		{env: map[string]string{EnvEndpoint: "http://c:4318"}, endpoint: "http://c:4318/v1/traces"},
		{env: map[string]string{EnvEndpoint: "https://c:4318/base/"}, endpoint: "https://c:4318/base/v1/traces"},
		// The signal's own variable is used as it is, and wins.
		{env: map[string]string{EnvEndpoint: "http://a:1", EnvTracesEndpoint: "http://b:2/custom"}, endpoint: "http://b:2/custom"},
		{env: map[string]string{EnvHeaders: "api-key=a%20b, x-tenant = t1 ,"}, endpoint: DefaultEndpoint,
			headers: map[string]string{"api-key": "a b", "x-tenant": "t1"}},
		{env: map[string]string{EnvEndpoint: "grpc://c:4317"}, err: EnvEndpoint},
		{env: map[string]string{EnvTracesEndpoint: "http://"}, err: EnvTracesEndpoint},
		{env: map[string]string{EnvHeaders: "novalue"}, err: EnvHeaders},
		{env: map[string]string{EnvHeaders: "bad key=v"}, err: "HTTP token"},
		{env: map[string]string{EnvHeaders: "k=%zz"}, err: "URL encoding"},
		// Compression: the signal's own variable wins; unset is the
		// exporter's default (gzip, filled in by New).
		{env: map[string]string{EnvCompression: "None"}, endpoint: DefaultEndpoint, compress: CompressionNone},
		{env: map[string]string{EnvCompression: "none", EnvTracesCompression: "gzip"}, endpoint: DefaultEndpoint, compress: CompressionGzip},
		{env: map[string]string{EnvTracesCompression: "zstd"}, err: EnvTracesCompression},
	} {
		c, err := ConfigFromEnv(func(k string) string { return tc.env[k] })
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want one naming %q", tc.env, err, tc.err)
			}
			continue
		}
		if err != nil || c.Endpoint != tc.endpoint || len(c.Headers) != len(tc.headers) || c.Compression != tc.compress {
			t.Errorf("%v: %+v, %v; want endpoint %s headers %v", tc.env, c, err, tc.endpoint, tc.headers)
		}
		for k, v := range tc.headers {
			if c.Headers[k] != v {
				t.Errorf("%v: header %s = %q, want %q", tc.env, k, c.Headers[k], v)
			}
		}
	}
}

func TestEndpointURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://c:4318":             "http://c:4318/v1/traces",
		"http://c:4318/":            "http://c:4318/v1/traces",
		"https://x.example/otlp/v1": "https://x.example/otlp/v1",
		"c:4318":                    "",
		"ftp://c/":                  "",
	} {
		got, err := EndpointURL(in)
		if (err != nil) != (want == "") || (want != "" && got != want) {
			t.Errorf("EndpointURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":    0,
		"3":   3 * time.Second,
		"0":   0,
		"-1":  0,
		"abc": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Minute).Format(http.TimeFormat):     0,
	} {
		if got := retryAfter(in, now); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestExportGivesUp: a receiver that stays down is retried with
// back-off for MaxElapsed, then the export fails with the last error.
func TestExportGivesUp(t *testing.T) {
	rcv := otlptest.NewReceiver(t)
	rcv.SetRefuse(func(int, int) (int, string) { return 503, "" })
	e, err := New(Config{Endpoint: rcv.URL(), InitialBackoff: 20 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, MaxElapsed: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b := NewBatch("test")
	p := Process{SessionID: 1, PID: 1, ServiceName: "x"}
	b.Add(&p, &synthCall, synthCall.ID)
	res, err := e.Export(context.Background(), b.Request())
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "gave up") {
		t.Fatalf("Export = %v, want giving up on 503", err)
	}
	// 20+40+40+... ms within 300 ms: several attempts, bounded.
	if res.Attempts < 3 || res.Attempts > 20 {
		t.Errorf("%d attempts", res.Attempts)
	}
	if spans, _, _ := rcv.Snapshot(); len(spans) != 0 {
		t.Errorf("refused spans were kept: %d", len(spans))
	}
}

func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "st")
	st, err := LoadState(path)
	if err != nil || len(st.Hours) != 0 {
		t.Fatalf("missing state: %+v, %v", st, err)
	}
	st.Hours[hourKey(7)] = Cursor{Start: 9, ID: 10}
	if err := st.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := LoadState(path)
	if err != nil || back.Hours["7"] != (Cursor{Start: 9, ID: 10}) {
		t.Fatalf("reload: %+v, %v", back, err)
	}
	// A link planted in place of the state is neither followed on read
	// nor written through: both refuse it (safefile.ErrUnsafe).
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadState(link); err == nil {
		t.Error("LoadState followed a symbolic link")
	}
	if err := st.Save(link); !errors.Is(err, safefile.ErrUnsafe) {
		t.Errorf("Save over a link: %v, want an unsafe-path refusal", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("Save wrote through a link: target now %q", b)
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadState(path); err == nil || !strings.Contains(err.Error(), "remove it") {
		t.Errorf("corrupt state: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*tmp-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// TestExportTLS: an https receiver whose certificate only --ca-file
// vouches for is refused without it and reached with it.
func TestExportTLS(t *testing.T) {
	rcv := otlptest.NewTLSReceiver(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rcv.Certificate()})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	b := NewBatch("test")
	p := Process{SessionID: 1, PID: 1, ServiceName: "x"}
	b.Add(&p, &synthCall, synthCall.ID)
	plain, err := New(Config{Endpoint: rcv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	// Not retried: the certificate will not change its mind.
	var perm *PermanentError
	if res, err := plain.Export(context.Background(), b.Request()); !errors.As(err, &perm) || !strings.Contains(err.Error(), "certificate") || res.Attempts != 1 {
		t.Errorf("export to an unknown CA: %v after %d attempts, want one certificate error", err, res.Attempts)
	}
	withCA, err := New(Config{Endpoint: rcv.URL(), CAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := withCA.Export(context.Background(), b.Request()); err != nil {
		t.Fatal(err)
	}
	if spans, _, _ := rcv.Snapshot(); len(spans) != 1 {
		t.Errorf("receiver holds %d spans, want 1", len(spans))
	}
	if _, err := New(Config{Endpoint: rcv.URL(), CAFile: filepath.Join(t.TempDir(), "none.pem")}); err == nil {
		t.Error("a missing CA file was accepted")
	}
}
