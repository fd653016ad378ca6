package daprtest

import (
	"testing"
	"time"
)

// A 3+3 cluster forms; a manual failover swaps a master and its replica.
func TestRedisClusterFailover(t *testing.T) {
	start := time.Now()
	c := StartRedisCluster(t, ClusterParams{})
	t.Logf("cluster of %d up in %s", len(c.Nodes), time.Since(start))
	masters := c.Masters()
	if len(masters) != 3 {
		t.Fatalf("masters: %d, want 3", len(masters))
	}
	m := masters[0]
	r := c.ReplicaOf(m)
	if r == nil {
		t.Fatalf("master %d has no replica", m.Port)
	}
	if _, err := c.Do(r, "cluster", "failover"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Role(r) != "master" || c.Role(m) != "slave" {
		if time.Now().After(deadline) {
			t.Fatalf("after CLUSTER FAILOVER: %d is %s, %d is %s", r.Port, c.Role(r), m.Port, c.Role(m))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.WaitHealthy(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("failover done %s after start", time.Since(start))
}
