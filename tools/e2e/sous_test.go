package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"
)

// The namespaces make e2e deploys sous into: the deployment every test
// shares, and a variant with a tight queue for the broker-retry test.
const (
	sousNS  = "sous-e2e"
	retryNS = "sous-e2e-retry"
	coldNS  = "sous-e2e-cold"
)

var (
	paGVR  = schema.GroupVersionResource{Group: "autoscaling.internal.knative.dev", Version: "v1alpha1", Resource: "podautoscalers"}
	revGVR = schema.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "revisions"}
)

// sousDeployment is sous deployed from its shipped manifests through the
// overlay, with a Broker, the recording sinks and Prometheus beside it.
type sousDeployment struct {
	c        *Cluster
	ns, host string
	model    string
	prom     *prometheus
}

var (
	deployOnce sync.Once
	deployed   *sousDeployment
	deployErr  error
	cleanups   []func()
)

func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.Exit(code)
}

// sous returns the shared deployment, deploying it on first use.
func sous(t *testing.T) *sousDeployment {
	t.Helper()
	image := os.Getenv("SOUS_E2E_IMAGE")
	if image == "" {
		t.Skip("SOUS_E2E_IMAGE unset: run through make e2e, which builds and pushes the image")
	}
	deployOnce.Do(func() { deployed, deployErr = deploySous(t, image) })
	if deployErr != nil {
		t.Fatal(deployErr)
	}
	return deployed
}

func deploySous(t *testing.T, image string) (*sousDeployment, error) {
	c := connect(t)
	ctx := context.Background()
	d := &sousDeployment{c: c, ns: sousNS}
	// The cold-start Service goes first so that it has scaled to zero by
	// the time its test runs.
	if err := d.deployVariant(ctx, coldNS, OverlayOptions{Image: image}, false, map[string]string{
		"autoscaling.knative.dev/min-scale":        "0",
		"autoscaling.knative.dev/scale-down-delay": "0s",
	}); err != nil {
		return nil, err
	}
	if err := d.deployVariant(ctx, sousNS, OverlayOptions{Image: image}, true, nil); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := c.WaitReady(ctx, ksvcGVR, sousNS, "sous", 5*time.Minute); err != nil {
		return nil, err
	}
	ksvc, _ := c.Get(ctx, ksvcGVR, sousNS, "sous")
	u, _, _ := unstructured.NestedString(ksvc.Object, "status", "url")
	d.host = strings.TrimPrefix(u, "http://")
	t.Logf("ksvc sous Ready %s after apply, at %s", time.Since(start).Round(time.Millisecond), u)
	r, code, err := postTurn(ctx, "http://"+c.Ingress, d.host, "e2e-model", "hello")
	if err != nil || code != http.StatusOK {
		return nil, fmt.Errorf("first /turn through Traefik: %d %v", code, err)
	}
	d.model = r.Model
	dir, err := os.MkdirTemp("", "sous-e2e-prometheus")
	if err != nil {
		return nil, err
	}
	d.prom, err = startPrometheus(c, dir, []string{sousNS})
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, d.prom.stop, func() { os.RemoveAll(dir) })
	return d, nil
}

// deployVariant creates ns and applies, in it: a Broker, the overlaid
// shipped manifests (o: the image, and env or another Service for
// variants; template annotations added for variants), a
// recording sink for the Trigger's dead letters and one for replies, with
// the Trigger that sends it every ai.sous.turn.reply. Without eventing,
// only the overlaid manifests, less the Trigger.
func (d *sousDeployment) deployVariant(ctx context.Context, ns string, o OverlayOptions, eventing bool, annotations map[string]string) error {
	c := d.c
	// A namespace left by an earlier run may still be terminating: objects
	// applied into it would be the old ones.
	err := WaitFor(ctx, "namespace "+ns+" gone or active", 5*time.Minute, func(ctx context.Context) (bool, string) {
		n, err := c.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			return true, ""
		}
		return n.Status.Phase != corev1.NamespaceTerminating, string(n.Status.Phase)
	})
	if err != nil {
		return err
	}
	if _, err := c.Apply(ctx, "", []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+ns+"\n")); err != nil {
		return err
	}
	if os.Getenv("SOUS_E2E_KEEP") == "" {
		cleanups = append(cleanups, func() {
			c.Kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		})
	}
	o.RedisHost = "redis.redis.svc.cluster.local:6379"
	manifest, err := Overlay(c.Root, o)
	if err != nil {
		return err
	}
	if len(annotations) > 0 {
		if manifest, err = annotateService(manifest, annotations); err != nil {
			return err
		}
	}
	if !eventing {
		objs, err := decodeAll(manifest)
		if err != nil {
			return err
		}
		for _, o := range objs {
			if o.GetKind() == "Trigger" {
				continue
			}
			y, _ := yaml.Marshal(o.Object)
			if _, err := c.Apply(ctx, ns, y); err != nil {
				return err
			}
		}
		return nil
	}
	broker := []byte("apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: default\n")
	if _, err := c.Apply(ctx, ns, broker); err != nil {
		return err
	}
	if _, err := c.Apply(ctx, ns, manifest); err != nil {
		return err
	}
	for _, name := range []string{"sous-dead-letters", "sous-replies"} {
		s, err := recordingSink(c, name)
		if err != nil {
			return err
		}
		if _, err := c.Apply(ctx, ns, s); err != nil {
			return err
		}
	}
	_, err = c.Apply(ctx, ns, []byte(`apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: sous-replies
spec:
  broker: default
  filter:
    attributes: {type: ai.sous.turn.reply}
  subscriber:
    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: sous-replies}
`))
	return err
}

// deleteNamespace deletes ns and waits (up to 3 minutes) until it is gone.
func deleteNamespace(c *Cluster, ns string) {
	ctx := context.Background()
	c.Kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	WaitFor(ctx, "namespace "+ns+" gone", 3*time.Minute, func(ctx context.Context) (bool, string) {
		_, err := c.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return err != nil, "terminating"
	})
}

// annotateService sets template annotations on the Knative Service in a
// multi-document manifest.
func annotateService(manifest []byte, annotations map[string]string) ([]byte, error) {
	objs, err := decodeAll(manifest)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for _, o := range objs {
		if o.GetKind() == "Service" && o.GetAPIVersion() == "serving.knative.dev/v1" {
			for k, v := range annotations {
				if err := unstructured.SetNestedField(o.Object, v, "spec", "template", "metadata", "annotations", k); err != nil {
					return nil, err
				}
			}
		}
		y, err := yaml.Marshal(o.Object)
		if err != nil {
			return nil, err
		}
		out.WriteString("---\n")
		out.Write(y)
	}
	return out.Bytes(), nil
}

// recordingSink is the smoke test's hello Service (logs "event <id>
// <type>" per CloudEvent) under another name, kept at one pod so that its
// log holds every event it got.
func recordingSink(c *Cluster, name string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(c.State, "manifests", "hello.yaml"))
	if err != nil {
		return nil, err
	}
	objs, err := decodeAll(b)
	if err != nil || len(objs) != 1 {
		return nil, fmt.Errorf("hello.yaml: %v", err)
	}
	o := objs[0]
	o.SetName(name)
	o.SetNamespace("")
	for k, v := range map[string]string{"autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/max-scale": "1"} {
		unstructured.SetNestedField(o.Object, v, "spec", "template", "metadata", "annotations", k)
	}
	return yaml.Marshal(o.Object)
}

// sinkEvents reads the events a recording sink logged: id → times seen.
func sinkEvents(ctx context.Context, c *Cluster, ns, sink string) (map[string]int, error) {
	pods, err := c.Pods(ctx, ns, "serving.knative.dev/service="+sink)
	if err != nil {
		return nil, err
	}
	seen := map[string]int{}
	re := regexp.MustCompile(`event (\S+) (\S+)`)
	for _, p := range pods {
		logs, err := c.Logs(ctx, ns, p.Name, "user-container")
		if err != nil {
			return nil, err
		}
		for _, m := range re.FindAllStringSubmatch(logs, -1) {
			seen[m[1]]++
		}
	}
	return seen, nil
}

// sousPods lists the running pods of the sous Service in ns, newest
// revision first.
func sousPods(ctx context.Context, c *Cluster, ns string) ([]corev1.Pod, error) {
	pods, err := c.Pods(ctx, ns, "serving.knative.dev/service=sous")
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range pods {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			out = append(out, p)
		}
	}
	return out, nil
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// turnReply is the data of a reply event and /turn's answer.
type turnReply struct {
	Session   string          `json:"session"`
	Turn      int             `json:"turn"`
	Output    json.RawMessage `json:"output"`
	Model     string          `json:"model"`
	BatchSize int             `json:"batch_size"`
}

// postTurn sends a /turn to base (http://host:port) with an optional Host.
func postTurn(ctx context.Context, base, host, session, text string) (turnReply, int, error) {
	b, _ := json.Marshal(map[string]string{"session": session, "text": text})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/turn", bytes.NewReader(b))
	if err != nil {
		return turnReply{}, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return turnReply{}, 0, err
	}
	defer resp.Body.Close()
	var r turnReply
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return r, resp.StatusCode, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return r, resp.StatusCode, json.NewDecoder(resp.Body).Decode(&r)
}

// redisSession reads the session document Dapr keeps for sous in Redis
// (key "sous||<session>", field data).
func redisSession(ctx context.Context, c *Cluster, session string) (string, error) {
	return redisKey(ctx, c, "sous||"+session)
}

// redisKey reads the field data of a Dapr state key (appid||key) from the
// cluster's Redis.
func redisKey(ctx context.Context, c *Cluster, key string) (string, error) {
	redis, err := c.Pods(ctx, "redis", "app=redis")
	if err != nil || len(redis) == 0 {
		return "", fmt.Errorf("redis pod: %v", err)
	}
	out, err := c.Exec(ctx, "redis", redis[0].Name, "redis", "redis-cli", "HGET", key, "data")
	return strings.TrimSpace(out), err
}

// mergePatch applies a JSON merge patch to the sous Service in ns.
func mergePatch(ctx context.Context, c *Cluster, ns string, patch string) error {
	_, err := c.Dynamic.Resource(ksvcGVR).Namespace(ns).Patch(ctx, "sous", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}
