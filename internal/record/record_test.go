package record

import "testing"

func TestPackageOf(t *testing.T) {
	cases := map[string]string{
		"main.main":           "main",
		"main.main.func1":     "main",
		"main.(*Counter).Inc": "main",
		"github.com/acme/api/v2.(*Server).Handle":     "github.com/acme/api/v2",
		"github.com/acme/api.Handle.func2.1":          "github.com/acme/api",
		"main.Map[go.shape.int]":                      "main",
		"main.Map[go.shape.*github.com/x/y.T]":        "main",
		"gopkg.in/yaml%2ev3.Unmarshal":                "gopkg.in/yaml%2ev3",
		"runtime.gopanic":                             "runtime",
		"example.com/m/pkg.(*List[go.shape.int]).Add": "example.com/m/pkg",
	}
	for in, want := range cases {
		if got := PackageOf(in); got != want {
			t.Errorf("PackageOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStatusRoundTrip(t *testing.T) {
	for s := StatusOK; s <= StatusUnfinished; s++ {
		got, err := ParseStatus(s.String())
		if err != nil || got != s {
			t.Fatalf("ParseStatus(%q) = %v, %v", s.String(), got, err)
		}
	}
	if _, err := ParseStatus("bogus"); err == nil {
		t.Fatal("ParseStatus accepted an unknown status")
	}
}
