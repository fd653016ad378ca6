// Command validate checks sous's deployment files with the code a cluster
// checks them with: Knative Serving's and Eventing's API types, their
// SetDefaults and Validate. func.yaml is read strictly against the func
// CLI's documented schema and checked against the Service it must agree
// with. It is a module of its own so that sous does not carry Kubernetes
// dependencies.
//
//	go run . ../../knative/*.yaml ../../func.yaml
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: validate FILE.yaml...")
		os.Exit(2)
	}
	var failed bool
	for _, path := range os.Args[1:] {
		if err := validateFile(path); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
			continue
		}
		fmt.Printf("%s: ok\n", path)
	}
	if failed {
		os.Exit(1)
	}
}

func validateFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if filepath.Base(path) == "func.yaml" {
		return validateFunc(b)
	}
	var errs []error
	for i, doc := range splitDocs(b) {
		if err := validateDoc(doc); err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", i+1, err))
		}
	}
	return errors.Join(errs...)
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

func splitDocs(b []byte) [][]byte {
	var out [][]byte
	for _, d := range docSep.Split(string(b), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			out = append(out, []byte(d))
		}
	}
	return out
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// validateDoc checks one manifest with its owner's validation code.
func validateDoc(doc []byte) error {
	var tm typeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	ctx := context.Background()
	switch {
	case tm.APIVersion == "serving.knative.dev/v1" && tm.Kind == "Service":
		var s servingv1.Service
		if err := yaml.UnmarshalStrict(doc, &s); err != nil {
			return err
		}
		s.SetDefaults(ctx)
		if err := s.Validate(ctx); err != nil {
			return fmt.Errorf("Service %s: %w", s.Name, err)
		}
	case tm.APIVersion == "eventing.knative.dev/v1" && tm.Kind == "Trigger":
		var tr eventingv1.Trigger
		if err := yaml.UnmarshalStrict(doc, &tr); err != nil {
			return err
		}
		tr.SetDefaults(ctx)
		if err := tr.Validate(ctx); err != nil {
			return fmt.Errorf("Trigger %s: %w", tr.Name, err)
		}
	case tm.APIVersion == "dapr.io/v1alpha1":
		// Dapr's own resources are checked by loading them into daprd
		// (the root package's TestComponentsLoadInDaprd).
	default:
		return fmt.Errorf("unknown resource %s %s", tm.APIVersion, tm.Kind)
	}
	return nil
}

// funcYAML is func.yaml as the func CLI documents it (specVersion 0.36.0).
type funcYAML struct {
	SpecVersion string `json:"specVersion"`
	Name        string `json:"name"`
	Runtime     string `json:"runtime"`
	Registry    string `json:"registry,omitempty"`
	Image       string `json:"image,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	Created     string `json:"created,omitempty"`
	Invoke      string `json:"invoke,omitempty"`
	Build       struct {
		Builder   string              `json:"builder,omitempty"`
		BuildEnvs []map[string]string `json:"buildEnvs,omitempty"`
	} `json:"build"`
	Run struct {
		Envs    []map[string]string `json:"envs,omitempty"`
		Volumes []map[string]any    `json:"volumes,omitempty"`
	} `json:"run"`
	Deploy struct {
		Namespace   string            `json:"namespace,omitempty"`
		Annotations map[string]string `json:"annotations,omitempty"`
		Labels      []map[string]any  `json:"labels,omitempty"`
		Options     struct {
			Scale struct {
				Min         *int64   `json:"min,omitempty"`
				Max         *int64   `json:"max,omitempty"`
				Metric      string   `json:"metric,omitempty"`
				Target      *float64 `json:"target,omitempty"`
				Utilization *float64 `json:"utilization,omitempty"`
			} `json:"scale"`
			Resources struct {
				Requests map[string]string `json:"requests,omitempty"`
				Limits   struct {
					CPU         string `json:"cpu,omitempty"`
					Memory      string `json:"memory,omitempty"`
					Concurrency *int64 `json:"concurrency,omitempty"`
				} `json:"limits"`
			} `json:"resources"`
		} `json:"options"`
	} `json:"deploy"`
	HealthEndpoints struct {
		Liveness  string `json:"liveness,omitempty"`
		Readiness string `json:"readiness,omitempty"`
	} `json:"healthEndpoints"`
}

// validateFunc reads func.yaml strictly, checks its values, and checks that
// it deploys what knative/service.yaml deploys.
func validateFunc(b []byte) error {
	var f funcYAML
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return err
	}
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(f.SpecVersion == "0.36.0", "specVersion %q, want 0.36.0", f.SpecVersion)
	check(f.Name != "", "name is empty")
	check(f.Runtime == "go", "runtime %q, want go", f.Runtime)
	check(f.Invoke == "" || f.Invoke == "http" || f.Invoke == "cloudevent", "invoke %q, want http or cloudevent", f.Invoke)
	check(f.Build.Builder == "" || f.Build.Builder == "pack" || f.Build.Builder == "s2i" || f.Build.Builder == "host", "build.builder %q", f.Build.Builder)
	sc := f.Deploy.Options.Scale
	check(sc.Metric == "concurrency" || sc.Metric == "rps", "deploy.options.scale.metric %q, want concurrency or rps", sc.Metric)
	check(sc.Min == nil || sc.Max == nil || *sc.Min <= *sc.Max, "scale.min > scale.max")
	check(sc.Utilization == nil || (*sc.Utilization > 0 && *sc.Utilization <= 100), "scale.utilization must be in (0, 100]")
	cc := f.Deploy.Options.Resources.Limits.Concurrency
	check(cc == nil || (*cc >= 0 && *cc <= 1000), "resources.limits.concurrency must be in [0, 1000]")
	check(f.HealthEndpoints.Liveness == "/health/liveness" && f.HealthEndpoints.Readiness == "/health/readiness",
		"healthEndpoints must be sous's /health/liveness and /health/readiness")

	// func.yaml and knative/service.yaml must scale alike.
	svcPath := os.Getenv("SOUS_SERVICE_YAML")
	if svcPath == "" {
		svcPath = "../../knative/service.yaml"
	}
	if sb, err := os.ReadFile(svcPath); err == nil {
		var s servingv1.Service
		if err := yaml.Unmarshal(bytes.TrimSpace(sb), &s); err == nil {
			ann := s.Spec.Template.Annotations
			if cc != nil && s.Spec.Template.Spec.ContainerConcurrency != nil {
				check(*cc == *s.Spec.Template.Spec.ContainerConcurrency, "resources.limits.concurrency %d, but %s has containerConcurrency %d", *cc, svcPath, *s.Spec.Template.Spec.ContainerConcurrency)
			}
			if sc.Target != nil {
				check(fmt.Sprint(*sc.Target) == ann["autoscaling.knative.dev/target"], "scale.target %v, but %s has target %s", *sc.Target, svcPath, ann["autoscaling.knative.dev/target"])
			}
		}
	}
	return errors.Join(errs...)
}
