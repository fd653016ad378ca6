package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Shipped lists the manifests a user deploys sous from, relative to the
// repository: the Knative Service and its Dapr Configuration, the Trigger,
// and the Dapr components. make e2e applies them through Overlay and
// nothing else.
var Shipped = []string{
	"knative/dapr-config.yaml",
	"components/statestore.yaml",
	"components/pubsub.yaml",
	"components/resiliency.yaml",
	"knative/service.yaml",
	"knative/trigger.yaml",
}

// OverlayOptions are the facts of the cluster the overlay fits sous to.
type OverlayOptions struct {
	Image     string // the image make e2e pushed, by digest (localhost:5000/sous@sha256:...)
	RedisHost string // the in-cluster Redis, host:port
	// Env adds or replaces environment variables of the sous container;
	// tests use it for variants (a tight queue), never make e2e's own
	// deployment.
	Env map[string]string
	// Service, if set, is the Knative Service to deploy in place of
	// knative/service.yaml (knative/service-chat.yaml), without the
	// Trigger, whose subscriber is the sous Service.
	Service string
}

// Overlay reads the shipped manifests under root and returns them, as one
// multi-document YAML, with exactly these changes (each one a fact of this
// cluster, not a change to how sous is run):
//
//  1. The image: the one make e2e built and pushed to the cluster's
//     registry, named by digest so that the revision runs exactly it (and
//     Knative's tag-to-digest resolution has nothing to resolve).
//  2. Resources: the Service asks 2 CPUs per pod (one batch executing, one
//     filling, on its own cores). The local node has 2 cores in all and the
//     control plane's pods request part of them, so at that request not
//     even one pod would schedule, and the autoscaler could never add a
//     second. Requests shrink to 100m CPU and 192Mi; the limits stay (2
//     CPUs, 1Gi), so a lone pod still uses the whole node.
//  3. The Redis secret: components/ read host and password from the
//     Secret sous-redis, which a user creates for their Redis; here it
//     points at the cluster's Redis (redis.redis.svc, no password).
func Overlay(root string, o OverlayOptions) ([]byte, error) {
	var out bytes.Buffer
	secret := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: sous-redis
stringData:
  host: %q
  password: ""
`, o.RedisHost)
	out.WriteString(secret)
	for _, rel := range Shipped {
		if o.Service != "" {
			switch rel {
			case "knative/service.yaml":
				rel = o.Service
			case "knative/trigger.yaml":
				continue
			}
		}
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			return nil, err
		}
		objs, err := decodeAll(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", rel, err)
		}
		for _, obj := range objs {
			if obj.GetKind() == "Service" && obj.GetAPIVersion() == "serving.knative.dev/v1" {
				if err := fitService(obj, o); err != nil {
					return nil, fmt.Errorf("%s: %w", rel, err)
				}
			}
			y, err := yaml.Marshal(obj.Object)
			if err != nil {
				return nil, err
			}
			out.WriteString("---\n")
			out.Write(y)
		}
	}
	return out.Bytes(), nil
}

func fitService(ksvc *unstructured.Unstructured, o OverlayOptions) error {
	containers, _, err := unstructured.NestedSlice(ksvc.Object, "spec", "template", "spec", "containers")
	if err != nil || len(containers) != 1 {
		return fmt.Errorf("want one container in the Service (%v)", err)
	}
	c := containers[0].(map[string]any)
	c["image"] = o.Image
	if err := unstructured.SetNestedField(c, "100m", "resources", "requests", "cpu"); err != nil {
		return err
	}
	if err := unstructured.SetNestedField(c, "192Mi", "resources", "requests", "memory"); err != nil {
		return err
	}
	if len(o.Env) > 0 {
		env, _ := c["env"].([]any)
		for name, value := range o.Env {
			replaced := false
			for _, e := range env {
				if m := e.(map[string]any); m["name"] == name {
					m["value"], replaced = value, true
				}
			}
			if !replaced {
				env = append(env, map[string]any{"name": name, "value": value})
			}
		}
		c["env"] = env
	}
	return unstructured.SetNestedSlice(ksvc.Object, containers, "spec", "template", "spec", "containers")
}

func decodeAll(b []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var out []*unstructured.Unstructured
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err == io.EOF {
			return out, nil
		} else if err != nil {
			return nil, err
		}
		if len(obj.Object) > 0 {
			out = append(out, obj)
		}
	}
}
