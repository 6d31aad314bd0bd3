// Package check validates deploy/kubernetes/obs-agent.yaml against the
// Kubernetes API types (k8s.io/api, pinned in go.mod): every document is
// decoded strictly, as the API server decodes, so a misspelt or misplaced
// field, a duplicate, or a value of the wrong type fails, as a schema
// validator would find it (kubeconform_test.go runs one too); then the
// properties the agent depends on are asserted. It is its own module so
// that obs-agent itself does not depend on the Kubernetes API; CI runs it
// without network beyond the Go module proxy (make check-deploy).
package check

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// decodeStrict decodes one document into the type its kind names.
func decodeStrict(t *testing.T, doc []byte) any {
	t.Helper()
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		t.Fatal(err)
	}
	var obj any
	switch tm.APIVersion + "/" + tm.Kind {
	case "v1/Namespace":
		obj = &corev1.Namespace{}
	case "v1/ConfigMap":
		obj = &corev1.ConfigMap{}
	case "apps/v1/DaemonSet":
		obj = &appsv1.DaemonSet{}
	default:
		t.Fatalf("unexpected kind %s %s", tm.APIVersion, tm.Kind)
	}
	// As the API server decodes: field names case-sensitive, unknown and
	// duplicate fields refused (encoding/json alone would take hostPid
	// for hostPID).
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		t.Fatalf("%s: %v", tm.Kind, err)
	}
	strict, err := kjson.UnmarshalStrict(j, obj)
	if err != nil {
		t.Fatalf("%s: %v", tm.Kind, err)
	}
	for _, e := range strict {
		t.Errorf("%s: %v", tm.Kind, e)
	}
	return obj
}

func TestDaemonSet(t *testing.T) {
	data, err := os.ReadFile("../obs-agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds *appsv1.DaemonSet
	var cm *corev1.ConfigMap
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		switch o := decodeStrict(t, doc).(type) {
		case *appsv1.DaemonSet:
			ds = o
		case *corev1.ConfigMap:
			cm = o
		}
	}
	if ds == nil || cm == nil {
		t.Fatal("want a DaemonSet and a ConfigMap")
	}
	if _, ok := cm.Data["obs-agent.yaml"]; !ok {
		t.Error("the ConfigMap has no obs-agent.yaml")
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostPID {
		t.Error("hostPID must be true: the agent follows the node's processes")
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template's labels", k, v)
		}
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.Name == "" || c.Image == "" {
		t.Error("the container needs a name and an image")
	}
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil || sc.Privileged == nil || *sc.Privileged {
		t.Fatal("the container must not be privileged, and must list its capabilities")
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("drop %v, want ALL", sc.Capabilities.Drop)
	}
	want := []corev1.Capability{"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"}
	if !slices.Equal(sc.Capabilities.Add, want) {
		t.Errorf("capabilities %v, want exactly %v (the systemd unit's set)", sc.Capabilities.Add, want)
	}
	unit, err := os.ReadFile("../../obs-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	var caps []string
	for _, c := range want {
		caps = append(caps, "CAP_"+string(c))
	}
	if !strings.Contains(string(unit), "CapabilityBoundingSet="+strings.Join(caps, " ")+"\n") {
		t.Errorf("the systemd unit's CapabilityBoundingSet differs from the DaemonSet's %v", caps)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
		if _, ok := mounts[v.Name]; !ok {
			t.Errorf("volume %s is not mounted", v.Name)
		}
	}
	for name := range mounts {
		if _, ok := vols[name]; !ok {
			t.Errorf("mount %s has no volume", name)
		}
	}
	if v := vols["store"]; v.HostPath == nil || mounts["store"].MountPath != "/var/lib/obs-agent" {
		t.Error("the store must be a hostPath mounted at /var/lib/obs-agent")
	}
	if v := vols["config"]; v.ConfigMap == nil || v.ConfigMap.Name != cm.Name || mounts["config"].MountPath != "/etc/obs-agent" {
		t.Error("the config must be the ConfigMap mounted at /etc/obs-agent")
	}
	if !slices.Contains(c.Args, "/etc/obs-agent/obs-agent.yaml") {
		t.Errorf("args %v do not name the mounted config", c.Args)
	}
}
