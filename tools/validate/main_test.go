package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Each validator passes the shipped files and fails a deliberately broken
// copy, with a message naming what is wrong.
func TestValidatorsCatchBrokenCopies(t *testing.T) {
	for _, tc := range []struct {
		file, from, to, want string
	}{
		{"knative/service.yaml", "containerConcurrency: 64", "containerConcurrency: 5000", "containerConcurrency"},
		{"knative/service.yaml", "autoscaling.knative.dev/metric: concurrency", "autoscaling.knative.dev/metric: latency", "metric"},
		{"knative/service.yaml", "      timeoutSeconds: 60", "      timeoutSecondz: 60", "unknown field"},
		{"knative/trigger.yaml", "  subscriber:\n    ref:\n      apiVersion: serving.knative.dev/v1\n      kind: Service\n      name: sous\n", "", "subscriber"},
		{"knative/trigger.yaml", "backoffDelay: PT0.2S", "backoffDelay: soon", "backoffDelay"},
		{"func.yaml", "runtime: go", "runtime: python", "runtime"},
		{"func.yaml", "        concurrency: 64", "        concurrency: 32", "containerConcurrency 64"},
		{"func.yaml", "healthEndpoints:", "healthEndpointz:", "unknown field"},
	} {
		t.Run(tc.file+"/"+tc.want, func(t *testing.T) {
			orig, err := os.ReadFile(filepath.Join("..", "..", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if err := validateFile(filepath.Join("..", "..", tc.file)); err != nil {
				t.Fatalf("the shipped %s fails: %v", tc.file, err)
			}
			if !strings.Contains(string(orig), tc.from) {
				t.Fatalf("%s no longer contains %q: update the test", tc.file, tc.from)
			}
			broken := filepath.Join(t.TempDir(), filepath.Base(tc.file))
			if err := os.WriteFile(broken, []byte(strings.Replace(string(orig), tc.from, tc.to, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			err = validateFile(broken)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("broken copy: got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}
