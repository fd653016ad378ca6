package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	ksvcGVR    = schema.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "services"}
	brokerGVR  = schema.GroupVersionResource{Group: "eventing.knative.dev", Version: "v1", Resource: "brokers"}
	triggerGVR = schema.GroupVersionResource{Group: "eventing.knative.dev", Version: "v1", Resource: "triggers"}
)

// connect returns the local cluster, or fails the test saying how to get
// one.
func connect(t *testing.T) *Cluster {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Connect(root)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// hello applies the smoke test's Knative Service (as images.sh resolved it
// with ko) in a namespace of its own and waits until it is Ready.
func hello(t *testing.T, c *Cluster, ns string) (host, image string) {
	t.Helper()
	ctx := context.Background()
	manifest, err := os.ReadFile(filepath.Join(c.State, "manifests", "hello.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	namespace(t, c, ns)
	objs, err := c.Apply(ctx, ns, []byte(strings.ReplaceAll(string(manifest), "namespace: default", "namespace: "+ns)))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.WaitReady(ctx, ksvcGVR, ns, "hello", 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	ksvc, _ := c.Get(ctx, ksvcGVR, ns, "hello")
	u, _, _ := unstructured.NestedString(ksvc.Object, "status", "url")
	containers, _, _ := unstructured.NestedSlice(objs[0].Object, "spec", "template", "spec", "containers")
	image, _, _ = unstructured.NestedString(containers[0].(map[string]any), "image")
	t.Logf("ksvc hello Ready after %s at %s", time.Since(start).Round(time.Millisecond), u)
	return strings.TrimPrefix(u, "http://"), image
}

// namespace creates ns and deletes it when the test ends.
func namespace(t *testing.T, c *Cluster, ns string) {
	t.Helper()
	ctx := context.Background()
	if _, err := c.Apply(ctx, "", []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+ns+"\n")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
}

// A Knative Service becomes Ready, answers through Traefik, scales to
// zero when idle, and answers again from zero.
func TestClusterKnativeService(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	host, _ := hello(t, c, "smoke-serving")
	get := func() (int, string, time.Duration) {
		start := time.Now()
		resp, body, err := c.Route(ctx, http.MethodGet, host, "/", nil, nil)
		if err != nil {
			t.Fatalf("GET %s through %s: %v", host, c.Ingress, err)
		}
		return resp.StatusCode, string(body), time.Since(start)
	}
	code, body, took := get()
	if code != http.StatusOK || !strings.HasPrefix(body, "hello from ") {
		t.Fatalf("GET %s: %d %q", host, code, body)
	}
	t.Logf("through Traefik at %s (Host: %s): %d %q in %s", c.Ingress, host, code, strings.TrimSpace(body), took.Round(time.Millisecond))

	start := time.Now()
	err := WaitFor(ctx, "scale to zero", 5*time.Minute, func(ctx context.Context) (bool, string) {
		pods, err := c.Pods(ctx, "smoke-serving", "serving.knative.dev/service=hello")
		if err != nil {
			return false, err.Error()
		}
		return len(pods) == 0, fmt.Sprintf("%d pods", len(pods))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scaled to zero %s after the request", time.Since(start).Round(time.Second))
	code, body, took = get()
	if code != http.StatusOK || !strings.HasPrefix(body, "hello from ") {
		t.Fatalf("GET from zero: %d %q", code, body)
	}
	t.Logf("from zero: %d %q in %s (cold start)", code, strings.TrimSpace(body), took.Round(time.Millisecond))
}

// A pod annotated for Dapr gets a daprd container injected, and saves and
// reads a state key in Redis through it.
func TestClusterDaprSidecar(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	const ns = "smoke-dapr"
	_, image := hello(t, c, ns)
	nonce := fmt.Sprintf("v%d", time.Now().UnixNano())
	const component = `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.redis
  version: v1
  metadata:
    - {name: redisHost, value: "redis.redis.svc.cluster.local:6379"}
    - {name: redisPassword, value: ""}
`
	if _, err := c.Apply(ctx, ns, []byte(component)); err != nil {
		t.Fatal(err)
	}
	containers := daprPod(t, c, ns, "dapr-smoke", "smoke", image)
	if !strings.Contains(strings.Join(containers, ","), "daprd") {
		t.Fatalf("no daprd container injected: %v", containers)
	}
	t.Logf("pod dapr-smoke runs %v", containers)

	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	addr, err := c.PortForward(fctx, ns, "dapr-smoke", 3500)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+addr+"/v1.0/state/statestore", "application/json",
		strings.NewReader(`[{"key":"smoke","value":"`+nonce+`"}]`))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("save through daprd: %v %v", resp, err)
	}
	resp, err = http.Get("http://" + addr + "/v1.0/state/statestore/smoke")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("read through daprd: %v %v", resp, err)
	}
	resp.Body.Close()
	redis, err := c.Pods(ctx, "redis", "app=redis")
	if err != nil || len(redis) == 0 {
		t.Fatalf("redis pod: %v", err)
	}
	out, err := c.Exec(ctx, "redis", redis[0].Name, "redis", "redis-cli", "HGET", "smoke||smoke", "data")
	if err != nil || !strings.Contains(out, nonce) {
		t.Fatalf("redis smoke||smoke: %q %v", out, err)
	}
	t.Logf("saved and read %q through daprd; Redis holds smoke||smoke = %s", nonce, strings.TrimSpace(out))
}

// daprPod runs the app image as pod name with Dapr's annotations (app id
// appID, port 8080), waits until the app and its injected daprd are ready,
// and returns the pod's containers.
func daprPod(t *testing.T, c *Cluster, ns, name, appID, image string) []string {
	t.Helper()
	ctx := context.Background()
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  annotations:
    dapr.io/enabled: "true"
    dapr.io/app-id: %s
    dapr.io/app-port: "8080"
spec:
  containers:
    - name: app
      image: %s
      env: [{name: PORT, value: "8080"}]
      securityContext: {runAsNonRoot: true, allowPrivilegeEscalation: false}
`, name, appID, image)
	if _, err := c.Apply(ctx, ns, []byte(manifest)); err != nil {
		t.Fatal(err)
	}
	var containers []string
	err := WaitFor(ctx, name+" running with its sidecar", 5*time.Minute, func(ctx context.Context) (bool, string) {
		pod, err := c.Kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		containers = containers[:0]
		ready := 0
		for _, s := range pod.Status.ContainerStatuses {
			containers = append(containers, s.Name)
			if s.Ready {
				ready++
			}
		}
		return ready == 2, fmt.Sprintf("%s, containers %v, %d ready", pod.Status.Phase, containers, ready)
	})
	if err != nil {
		t.Fatal(err)
	}
	return containers
}

// An event sent to a Broker reaches a Trigger's subscriber.
func TestClusterBrokerTrigger(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	const ns = "smoke-eventing"
	hello(t, c, ns)
	if _, err := c.Apply(ctx, ns, []byte(`apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: smoke
spec:
  broker: default
  filter:
    attributes: {type: smoke.ping}
  subscriber:
    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: hello}
`)); err != nil {
		t.Fatal(err)
	}
	for _, o := range []struct {
		gvr  schema.GroupVersionResource
		name string
	}{{brokerGVR, "default"}, {triggerGVR, "smoke"}} {
		if err := c.WaitReady(ctx, o.gvr, ns, o.name, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	// The broker's ingress, at its Service's cluster IP (the host reaches
	// the cluster's services, not its DNS names).
	svc, err := c.Kube.CoreV1().Services("knative-eventing").Get(ctx, "broker-ingress", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("smoke-%d", time.Now().UnixNano())
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://%s/%s/default", svc.Spec.ClusterIP, ns), strings.NewReader(`{"ping":1}`))
	req.Header = http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {id}, "Ce-Source": {"/smoke"},
		"Ce-Type": {"smoke.ping"}, "Content-Type": {"application/json"}}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("broker ingress answered %d", resp.StatusCode)
	}
	want := "event " + id + " smoke.ping"
	err = WaitFor(ctx, "the event at the subscriber", 3*time.Minute, func(ctx context.Context) (bool, string) {
		pods, err := c.Pods(ctx, ns, "serving.knative.dev/service=hello")
		if err != nil {
			return false, err.Error()
		}
		for _, p := range pods {
			logs, _ := c.Logs(ctx, ns, p.Name, "user-container")
			if strings.Contains(logs, want) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d subscriber pods, none logged %q", len(pods), want)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("event %s sent to broker %s/default reached the trigger's subscriber", id, ns)
}
