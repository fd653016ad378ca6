// Package e2e tests sous's platform end to end on the local cluster that
// `make cluster` brings up: Kubernetes, Knative Serving with Traefik,
// Knative Eventing, Dapr and Redis. Its helpers build the clients once from
// the cluster's kubeconfig, apply manifests, and wait on conditions with a
// deadline, saying what they last saw.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
)

// Cluster is a connection to the local cluster.
type Cluster struct {
	Root    string // the repository
	State   string // .cache/cluster
	Ingress string // host:port where Traefik serves Knative routes
	Config  *rest.Config
	Kube    *kubernetes.Clientset
	Dynamic dynamic.Interface
	mapper  *restmapper.DeferredDiscoveryRESTMapper
}

// Connect reads .cache/cluster/kubeconfig and .cache/cluster/ingress under
// root.
func Connect(root string) (*Cluster, error) {
	state := filepath.Join(root, ".cache", "cluster")
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(state, "kubeconfig"))
	if err != nil {
		return nil, fmt.Errorf("no cluster (run make cluster): %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	ingress, err := os.ReadFile(filepath.Join(state, "ingress"))
	if err != nil {
		return nil, fmt.Errorf("no cluster ingress (run make cluster): %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Cluster{Root: root, State: state, Ingress: strings.TrimSpace(string(ingress)), Config: cfg, Kube: kube,
		Dynamic: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

// Apply server-side applies every object in a multi-document YAML, in
// namespace ns where an object names none, and returns the objects.
func (c *Cluster) Apply(ctx context.Context, ns string, manifest []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	var out []*unstructured.Unstructured
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); err == io.EOF {
			return out, nil
		} else if err != nil {
			return out, err
		}
		if len(obj.Object) == 0 {
			continue
		}
		ri, err := c.resource(&obj, ns)
		if err != nil {
			return out, err
		}
		data, err := obj.MarshalJSON()
		if err != nil {
			return out, err
		}
		got, err := ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, data,
			metav1.PatchOptions{FieldManager: "sous-e2e", Force: ptr(true)})
		if err != nil {
			return out, fmt.Errorf("apply %s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
		out = append(out, got)
	}
}

// Delete deletes the objects (ignoring those already gone).
func (c *Cluster) Delete(ctx context.Context, objs []*unstructured.Unstructured) {
	for _, o := range objs {
		if ri, err := c.resource(o, o.GetNamespace()); err == nil {
			ri.Delete(ctx, o.GetName(), metav1.DeleteOptions{})
		}
	}
}

func (c *Cluster) resource(obj *unstructured.Unstructured, ns string) (dynamic.ResourceInterface, error) {
	gvk := obj.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		c.mapper.Reset()
		if m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return nil, err
		}
	}
	if m.Scope.Name() == "root" {
		return c.Dynamic.Resource(m.Resource), nil
	}
	if obj.GetNamespace() == "" {
		obj.SetNamespace(ns)
	}
	return c.Dynamic.Resource(m.Resource).Namespace(obj.GetNamespace()), nil
}

// Get reads one object.
func (c *Cluster) Get(ctx context.Context, gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	return c.Dynamic.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
}

// Ready reports whether an object's status condition Ready is True, and
// the condition's message otherwise.
func Ready(obj *unstructured.Unstructured) (bool, string) {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" {
			return m["status"] == "True", fmt.Sprintf("%v: %v %v", m["status"], m["reason"], m["message"])
		}
	}
	return false, "no Ready condition yet"
}

// WaitFor calls check every interval until it returns true, or fails after
// timeout with the last thing check said it saw.
func WaitFor(ctx context.Context, what string, timeout time.Duration, check func(ctx context.Context) (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		ok, seen := check(ctx)
		if ok {
			return nil
		}
		last = seen
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not within %s; last seen: %s", what, timeout, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// WaitReady waits for a namespaced object's Ready condition.
func (c *Cluster) WaitReady(ctx context.Context, gvr schema.GroupVersionResource, ns, name string, timeout time.Duration) error {
	return WaitFor(ctx, fmt.Sprintf("%s %s/%s Ready", gvr.Resource, ns, name), timeout, func(ctx context.Context) (bool, string) {
		obj, err := c.Get(ctx, gvr, ns, name)
		if err != nil {
			return false, err.Error()
		}
		return Ready(obj)
	})
}

// Route sends a request through Traefik to the Knative route host.
func (c *Cluster) Route(ctx context.Context, method, host, path string, header http.Header, body []byte) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.Ingress+path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Host = host
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// Pods lists the pods of a namespace matching a label selector.
func (c *Cluster) Pods(ctx context.Context, ns, selector string) ([]corev1.Pod, error) {
	l, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

// PortForward forwards a free loopback port to a pod's port (as kubectl
// port-forward does) until ctx ends, and returns the local address.
func (c *Cluster) PortForward(ctx context.Context, ns, pod string, port int) (string, error) {
	rt, upgrader, err := spdy.RoundTripperFor(c.Config)
	if err != nil {
		return "", err
	}
	u, err := url.Parse(c.Config.Host)
	if err != nil {
		return "", err
	}
	u.Path = fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/portforward", ns, pod)
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	local := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	ready := make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("%d:%d", local, port)},
		ctx.Done(), ready, io.Discard, io.Discard)
	if err != nil {
		return "", err
	}
	errc := make(chan error, 1)
	go func() { errc <- fw.ForwardPorts() }()
	select {
	case <-ready:
		return fmt.Sprintf("127.0.0.1:%d", local), nil
	case err := <-errc:
		return "", fmt.Errorf("port-forward %s/%s:%d: %w", ns, pod, port, err)
	}
}

// Exec runs a command in a pod's container and returns its output.
func (c *Cluster) Exec(ctx context.Context, ns, pod, container string, cmd ...string) (string, error) {
	req := c.Kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: cmd, Stdout: true, Stderr: true},
			runtime.NewParameterCodec(scheme.Scheme))
	ex, err := remotecommand.NewSPDYExecutor(c.Config, http.MethodPost, req.URL())
	if err != nil {
		return "", err
	}
	var out, errb bytes.Buffer
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errb}); err != nil {
		return out.String(), fmt.Errorf("exec %v: %w: %s", cmd, err, errb.String())
	}
	return out.String(), nil
}

// Logs returns a container's log.
func (c *Cluster) Logs(ctx context.Context, ns, pod, container string) (string, error) {
	b, err := c.Kube.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(ctx)
	return string(b), err
}

func ptr[T any](v T) *T { return &v }
