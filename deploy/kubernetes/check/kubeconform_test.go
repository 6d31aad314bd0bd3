package check

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The OpenAPI document the manifests are validated against: the one the
// Kubernetes API server of this release serves, as the release's source
// holds it (api/openapi-spec/swagger.json). It comes from the Go module
// proxy, pinned here by version and by the module's checksum, so the check
// needs no network beyond the proxy and cannot drift silently.
const (
	kubernetesModule  = "k8s.io/kubernetes"
	kubernetesVersion = "v1.37.2"
	kubernetesSum     = "h1:A2VDEiObzkYqFTKhSsn0ZEb0RlLEXpHWj93gi2HqEwE="
)

// kinds are the objects obs-agent.yaml may hold: the schema file
// kubeconform looks up for each ({{.ResourceKind}}{{.KindSuffix}}.json)
// and its definition in the OpenAPI document.
var kinds = []struct{ file, apiVersion, kind, def string }{
	{"namespace-v1", "v1", "Namespace", "io.k8s.api.core.v1.Namespace"},
	{"configmap-v1", "v1", "ConfigMap", "io.k8s.api.core.v1.ConfigMap"},
	{"daemonset-apps-v1", "apps/v1", "DaemonSet", "io.k8s.api.apps.v1.DaemonSet"},
}

// swaggerPath downloads the pinned Kubernetes module (about 21 MB, once
// per module cache) and returns its OpenAPI document's path.
func swaggerPath(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", kubernetesModule+"@"+kubernetesVersion).Output()
	if err != nil {
		t.Fatalf("go mod download %s@%s: %v (the Go module proxy must be reachable)", kubernetesModule, kubernetesVersion, err)
	}
	var m struct{ Dir, Sum, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	if m.Error != "" {
		t.Fatalf("go mod download: %s", m.Error)
	}
	if m.Sum != kubernetesSum {
		t.Fatalf("%s@%s has checksum %s, pinned %s", kubernetesModule, kubernetesVersion, m.Sum, kubernetesSum)
	}
	return filepath.Join(m.Dir, "api", "openapi-spec", "swagger.json")
}

// writeSchemas turns the OpenAPI (v2) definitions into one JSON Schema per
// kind, in the form kubeconform reads ("standalone strict", as the
// published kubernetes-json-schema sets are made): the kind's definition
// at the root with every definition it may reference beside it, objects
// closed to properties they do not declare (additionalProperties false,
// which is what -strict relies on), int-or-string fields taking either,
// quantities taking a string or a number, and kind and apiVersion fixed.
func writeSchemas(t *testing.T, swagger, dir string) {
	t.Helper()
	data, err := os.ReadFile(swagger)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Definitions map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", swagger, err)
	}
	defs := map[string]any{}
	for name, d := range doc.Definitions {
		defs[name] = closeSchema(d)
	}
	for _, q := range []string{"io.k8s.apimachinery.pkg.api.resource.Quantity"} {
		if _, ok := defs[q]; !ok {
			t.Fatalf("%s has no definition %s", swagger, q)
		}
		defs[q] = map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
	}
	for _, k := range kinds {
		root, ok := defs[k.def].(map[string]any)
		if !ok {
			t.Fatalf("%s has no definition %s", swagger, k.def)
		}
		s := map[string]any{}
		for key, v := range root {
			s[key] = v
		}
		props := map[string]any{}
		for key, v := range root["properties"].(map[string]any) {
			props[key] = v
		}
		props["kind"] = map[string]any{"type": "string", "enum": []any{k.kind}}
		props["apiVersion"] = map[string]any{"type": "string", "enum": []any{k.apiVersion}}
		s["properties"] = props
		s["definitions"] = defs
		out, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, k.file+".json"), out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// closeSchema rewrites one OpenAPI schema (recursively) into JSON Schema
// as kubeconform's strict schemas have it.
func closeSchema(v any) any {
	switch s := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for key, val := range s {
			switch key {
			case "properties":
				props := map[string]any{}
				for name, p := range val.(map[string]any) {
					props[name] = closeSchema(p)
				}
				out[key] = props
			case "items", "additionalProperties":
				out[key] = closeSchema(val)
			default:
				out[key] = val
			}
		}
		if out["format"] == "int-or-string" {
			delete(out, "type")
			delete(out, "format")
			out["oneOf"] = []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}
		}
		if _, ok := out["properties"]; ok {
			if _, set := out["additionalProperties"]; !set {
				out["additionalProperties"] = false
			}
		}
		return out
	default:
		return v
	}
}

// kubeconform runs the pinned kubeconform (a tool of this module, see
// go.mod) in strict mode on file against the schemas in dir.
func kubeconform(dir, file string) ([]byte, error) {
	cmd := exec.Command("go", "tool", "kubeconform", "-strict", "-summary", "-output", "text",
		"-kubernetes-version", strings.TrimPrefix(kubernetesVersion, "v"),
		"-schema-location", filepath.Join(dir, "{{.ResourceKind}}{{.KindSuffix}}.json"), file)
	return cmd.CombinedOutput()
}

// TestKubeconform validates the example manifest with kubeconform against
// the API's own schema: types, required fields, enums and unknown fields.
// The broken copies check that the validator sees what it should: each
// must be refused, with the reason in its output.
func TestKubeconform(t *testing.T) {
	dir := t.TempDir()
	writeSchemas(t, swaggerPath(t), dir)
	out, err := kubeconform(dir, "../obs-agent.yaml")
	if err != nil {
		t.Fatalf("kubeconform refused deploy/kubernetes/obs-agent.yaml: %v\n%s", err, out)
	}
	want := fmt.Sprintf("Summary: %d resources found in 1 file - Valid: %d, Invalid: 0, Errors: 0, Skipped: 0", len(kinds), len(kinds))
	t.Logf("%s", out)
	if !bytes.Contains(out, []byte(want)) {
		t.Fatalf("kubeconform: want %q in\n%s", want, out)
	}

	orig, err := os.ReadFile("../obs-agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, from, to, why string }{
		{"misspelt field", "hostPID: true", "hostPid: true", "additional properties 'hostPid' not allowed"},
		{"no selector", "  selector:\n    matchLabels:\n      app.kubernetes.io/name: obs-agent\n", "", "missing property 'selector'"},
		{"wrong type", "hostPID: true", "hostPID: \"yes\"", "got string, want boolean"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !bytes.Contains(orig, []byte(c.from)) {
				t.Fatalf("the manifest no longer holds %q: update this case", c.from)
			}
			bad := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(bad, bytes.Replace(orig, []byte(c.from), []byte(c.to), 1), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := kubeconform(dir, bad)
			if err == nil {
				t.Fatalf("kubeconform took a manifest with a %s:\n%s", c.name, out)
			}
			t.Logf("%s", out)
			if !bytes.Contains(out, []byte(c.why)) {
				t.Fatalf("kubeconform refused it, but not saying %q:\n%s", c.why, out)
			}
		})
	}
}
