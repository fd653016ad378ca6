package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sous-ai/sous/internal/daprtest"
)

// clusterResources copies components/*.yaml with the Redis address and an
// empty password in place of their secret references, and edit applied.
func clusterResources(t *testing.T, redis *daprtest.Redis, edit func(name, s string) string) string {
	t.Helper()
	dir := t.TempDir()
	files, _ := filepath.Glob("components/*.yaml")
	if len(files) < 3 {
		t.Fatalf("components/: %v, want statestore, pubsub and resiliency", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := daprtest.PlainSecrets(string(b), redis.Addr())
		if edit != nil {
			s = edit(filepath.Base(f), s)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// The shipped components load into a real daprd, the Redis Cluster
// variant of the state store too; a broken copy does not.
func TestComponentsLoadInDaprd(t *testing.T) {
	redis := daprtest.StartRedis(t)
	if err := daprtest.LoadResources(t, clusterResources(t, redis, nil)); err != nil {
		t.Fatalf("components/ do not load: %v", err)
	}
	// The Redis Cluster variant, against a real cluster.
	cluster := daprtest.StartRedisCluster(t, daprtest.ClusterParams{})
	onCluster := clusterResources(t, redis, func(name, s string) string {
		variant, err := os.ReadFile(filepath.Join("components", "redis-cluster", name))
		if err != nil {
			return s
		}
		return daprtest.PlainSecrets(string(variant), cluster.Hosts())
	})
	if err := daprtest.LoadResources(t, onCluster); err != nil {
		t.Fatalf("components/redis-cluster/ (statestore.yaml, resiliency.yaml) do not load: %v", err)
	}
	broken := clusterResources(t, redis, func(name, s string) string {
		if name == "statestore.yaml" {
			return strings.Replace(s, "type: state.redis", "type: state.nosuchstore", 1)
		}
		return s
	})
	err := daprtest.LoadResources(t, broken)
	if err == nil || !strings.Contains(err.Error(), "nosuchstore") {
		t.Fatalf("a component of an unknown type: got %v, want daprd to refuse it", err)
	}
}
