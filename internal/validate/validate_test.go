package validate

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestRange(t *testing.T) {
	dur := Range[time.Duration]{Min: time.Second, Max: time.Hour, Special: []Special[time.Duration]{{0, "never"}}}
	rate := Range[float64]{Min: 0, Max: 1}
	n := Range[int]{Min: 1, Special: []Special[int]{{-1, "no limit"}}}
	cases := []struct {
		err  error
		want string // "" = accepted
	}{
		{dur.Check("every", 0), ""},
		{dur.Check("every", time.Second), ""},
		{dur.Check("every", time.Hour), ""},
		{dur.Check("every", -5*time.Second), "--every -5s is out of range: want 0 (never), or from 1s to 1h"},
		{dur.Check("every", time.Nanosecond), "--every 1ns is out of range"},
		{dur.Check("every", 90*time.Minute), "--every 1h30m is out of range"},
		{rate.Check("sample", 0.5), ""},
		{rate.Check("sample", 1.5), "--sample 1.5 is out of range: want from 0 to 1"},
		{rate.Check("sample", math.NaN()), "--sample NaN is out of range"},
		{rate.Check("sample", math.Inf(-1)), "--sample -Inf is out of range"},
		{n.Check("max", -1), ""},
		{n.Check("max", math.MaxInt), ""},
		{n.Check("max", 0), "--max 0 is out of range: want -1 (no limit), or at least 1"},
		{n.Check("max", -2), "--max -2 is out of range"},
	}
	for i, c := range cases {
		switch {
		case c.want == "" && c.err != nil:
			t.Errorf("%d: unexpected error %v", i, c.err)
		case c.want != "" && (c.err == nil || !strings.Contains(c.err.Error(), c.want)):
			t.Errorf("%d: error %v, want it to contain %q", i, c.err, c.want)
		}
		var ve *Error
		if c.err != nil && !errors.As(c.err, &ve) {
			t.Errorf("%d: %v is not a *validate.Error", i, c.err)
		}
	}
}

func TestTime(t *testing.T) {
	for _, ok := range []time.Time{{}, time.Unix(0, 0), time.Date(2262, 4, 11, 0, 0, 0, 0, time.UTC), time.Date(1678, 1, 1, 0, 0, 0, 0, time.UTC)} {
		if err := Time("since", "x", ok); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for _, bad := range []time.Time{time.Date(2262, 4, 12, 0, 0, 0, 0, time.UTC), time.Date(1677, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)} {
		err := Time("until", "given", bad)
		if err == nil || !strings.Contains(err.Error(), "--until given is out of range: want a time from 1677-09-21T00:12:44Z to 2262-04-11T23:47:16Z") {
			t.Errorf("%v: %v", bad, err)
		}
	}
	// The bounds themselves must survive the round trip through UnixNano.
	if MinTime.UnixNano() != math.MinInt64 || MaxTime.UnixNano() != math.MaxInt64 {
		t.Error("MinTime/MaxTime are not the int64 nanosecond bounds")
	}
}

func TestClip(t *testing.T) {
	if Clip("short") != "short" || Quote("a\"b") != `"a\"b"` {
		t.Error("short text changed")
	}
	long := strings.Repeat("é", 5000) // 10,000 bytes, 2 per character
	c := Clip(long)
	if len(c) > maxEcho+30 || !strings.HasSuffix(c, "… (10000 bytes)") || !strings.HasPrefix(c, "éé") {
		t.Errorf("Clip: %q", c)
	}
	if strings.ContainsRune(c, '\uFFFD') {
		t.Errorf("Clip cut a character in half: %q", c)
	}
	if l := ClipLine(strings.Repeat("b", 10000)); len(l) > maxLine+30 || !strings.HasSuffix(l, "… (10000 bytes)") {
		t.Errorf("ClipLine: %d bytes", len(l))
	}
	if s := strings.Repeat("c", maxLine); ClipLine(s) != s {
		t.Error("ClipLine changed a message of maxLine bytes")
	}
	q := Quote(strings.Repeat("a", 10000))
	if !strings.HasPrefix(q, `"aaa`) || !strings.HasSuffix(q, `"… (10000 bytes)`) || len(q) > maxEcho+30 {
		t.Errorf("Quote: %q", q)
	}
}

func TestFirst(t *testing.T) {
	a, b := errors.New("a"), errors.New("b")
	if First(nil, a, b) != a || First(nil, nil) != nil {
		t.Error("First does not return the first error")
	}
}

func TestListenAddr(t *testing.T) {
	cases := []struct{ in, want, err string }{
		{"9464", "127.0.0.1:9464", ""},
		{":9464", "127.0.0.1:9464", ""},
		{"localhost:9464", "127.0.0.1:9464", ""},
		{"0.0.0.0:9464", "0.0.0.0:9464", ""},
		{"[::]:9464", "[::]:9464", ""},
		{"[::1]:1", "[::1]:1", ""},
		{"192.0.2.7:65535", "192.0.2.7:65535", ""},
		{"0", "", "--metrics-listen 0 is out of range: want from 1 to 65535"},
		{"70000", "", "--metrics-listen 70000 is out of range"},
		{"127.0.0.1:-1", "", "--metrics-listen -1 is out of range"},
		{"", "", `--metrics-listen "": want PORT`},
		{"abc", "", `--metrics-listen "abc": want PORT`},
		{"example.com:9464", "", `--metrics-listen "example.com:9464": want PORT`},
		{"::1:9464", "", `--metrics-listen "::1:9464": want PORT`},
		{"1.2.3.4", "", `--metrics-listen "1.2.3.4": want PORT`},
	}
	for _, c := range cases {
		got, err := ListenAddr("metrics-listen", c.in)
		switch {
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("ListenAddr(%q) = %q, %v; want %q", c.in, got, err, c.want)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("ListenAddr(%q) = %q, %v; want error %q", c.in, got, err, c.err)
		}
	}
}
