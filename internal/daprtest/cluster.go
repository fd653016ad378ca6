package daprtest

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// RedisCluster is a Redis Cluster of redis-server children on loopback:
// masters, each with its replicas, on free ports. Its methods are for one
// goroutine at a time.
type RedisCluster struct {
	t T
	// Nodes are every server started, running or stopped; which is a
	// master changes with failovers (see Masters).
	Nodes []*Redis
	// NodeTimeout is cluster-node-timeout: how long a master may not
	// answer before its replica takes over.
	NodeTimeout time.Duration
}

// ClusterParams sizes a cluster. The zero value is 3 masters with one
// replica each and a 2s node timeout.
type ClusterParams struct {
	Masters, ReplicasPerMaster int
	NodeTimeout                time.Duration
}

// StartRedisCluster starts the cluster's servers (each persisting as
// StartRedis does), joins them with `redis-cli --cluster create` and waits
// until every node reports the cluster healthy and every replica is in
// sync. The servers are stopped when the test ends.
func StartRedisCluster(t T, p ClusterParams) *RedisCluster {
	t.Helper()
	if p.Masters == 0 {
		p.Masters, p.ReplicasPerMaster = 3, 1
	}
	if p.NodeTimeout == 0 {
		p.NodeTimeout = 2 * time.Second
	}
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: run `make test`, which installs it", bin)
		}
	}
	c := &RedisCluster{t: t, NodeTimeout: p.NodeTimeout}
	create := []string{"--cluster", "create"}
	for range p.Masters * (1 + p.ReplicasPerMaster) {
		r := &Redis{t: t, Port: FreePort(t), dir: t.TempDir()}
		// The bus port is picked too: the default, port+10000, may be
		// taken.
		r.extra = []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(FreePort(t)),
			// A replica syncs at once, not after the default 5s wait for
			// others to join the same transfer.
			"--repl-diskless-sync-delay", "0",
			"--cluster-node-timeout", strconv.FormatInt(p.NodeTimeout.Milliseconds(), 10)}
		r.Start()
		t.Cleanup(r.Stop)
		c.Nodes = append(c.Nodes, r)
		create = append(create, r.Addr())
	}
	create = append(create, "--cluster-replicas", strconv.Itoa(p.ReplicasPerMaster), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", create...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}

// Hosts is every node's host:port, comma-separated: state.redis's
// redisHost for redisType cluster.
func (c *RedisCluster) Hosts() string {
	var addrs []string
	for _, r := range c.Nodes {
		addrs = append(addrs, r.Addr())
	}
	return strings.Join(addrs, ",")
}

// Do runs one command on node with redis-cli and returns its output.
func (c *RedisCluster) Do(node *Redis, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-cli", append([]string{"-p", strconv.Itoa(node.Port)}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("redis-cli -p %d %s: %w: %s", node.Port, strings.Join(args, " "), err, out)
	}
	if s := string(out); strings.HasPrefix(s, "ERR ") || strings.HasPrefix(s, "Could not connect") {
		return s, fmt.Errorf("redis-cli -p %d %s: %s", node.Port, strings.Join(args, " "), s)
	}
	return string(out), nil
}

// info returns one field of node's INFO section, "" when absent.
func (c *RedisCluster) info(node *Redis, section, field string) string {
	out, err := c.Do(node, "info", section)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// Masters are the running nodes that say they are masters.
func (c *RedisCluster) Masters() []*Redis {
	var out []*Redis
	for _, r := range c.Nodes {
		if r.Pid() != 0 && c.info(r, "replication", "role") == "master" {
			out = append(out, r)
		}
	}
	return out
}

// ReplicaOf is a running replica of master, nil if none.
func (c *RedisCluster) ReplicaOf(master *Redis) *Redis {
	for _, r := range c.Nodes {
		if r.Pid() != 0 && c.info(r, "replication", "role") == "slave" &&
			c.info(r, "replication", "master_port") == strconv.Itoa(master.Port) {
			return r
		}
	}
	return nil
}

// Role is what node says it is: "master" or "slave" ("" when it does not
// answer).
func (c *RedisCluster) Role(node *Redis) string { return c.info(node, "replication", "role") }

// healthy says what is wrong with the cluster, "" when nothing: every
// running node must see every slot served (cluster_state:ok), every
// running replica must be linked to its master, and the running nodes must
// agree on which node is a replica of which.
func (c *RedisCluster) healthy() string {
	for _, r := range c.Nodes {
		if r.Pid() == 0 {
			continue
		}
		out, err := c.Do(r, "cluster", "info")
		if err != nil {
			return err.Error()
		}
		if !strings.Contains(out, "cluster_state:ok") {
			return fmt.Sprintf("node %d: %s", r.Port, strings.TrimSpace(strings.SplitN(out, "\n", 2)[0]))
		}
		if c.info(r, "replication", "role") == "slave" {
			if link := c.info(r, "replication", "master_link_status"); link != "up" {
				return fmt.Sprintf("replica %d: master_link_status %q", r.Port, link)
			}
		}
	}
	// Every node must also know every other's role: until gossip has told
	// the masters which nodes replicate which, they deny a replica's
	// election, and a CLUSTER FAILOVER times out doing nothing (seen right
	// after --cluster create: each replica knew itself as one, no master did).
	var first string
	var firstPort int
	for _, r := range c.Nodes {
		if r.Pid() == 0 {
			continue
		}
		view, err := c.roles(r)
		if err != nil {
			return err.Error()
		}
		if first == "" {
			first, firstPort = view, r.Port
		} else if view != first {
			return fmt.Sprintf("nodes %d and %d disagree on the roles: %s / %s", firstPort, r.Port, first, view)
		}
	}
	return ""
}

// roles is r's view of the cluster: each node's id with master, or slave
// of its master's id, sorted.
func (c *RedisCluster) roles(r *Redis) (string, error) {
	out, err := c.Do(r, "cluster", "nodes")
	if err != nil {
		return "", err
	}
	var view []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		role := "master"
		if strings.Contains(f[2], "slave") {
			role = "slave of " + f[3]
		}
		view = append(view, f[0]+" "+role)
	}
	slices.Sort(view)
	return strings.Join(view, ", "), nil
}

// WaitHealthy waits until the cluster is healthy (see healthy) or timeout
// passes; the error then says what it last saw.
func (c *RedisCluster) WaitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		last := c.healthy()
		if last == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis cluster not healthy after %s: %s", timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// CommandStat is one command's line of INFO commandstats.
type CommandStat struct {
	Calls       int64
	Usec        int64
	UsecPerCall float64
}

// CommandStats sums INFO commandstats over the running masters, by command
// (lower case, as Redis names them: "eval", "hgetall", "expire").
func (c *RedisCluster) CommandStats() map[string]CommandStat {
	out := map[string]CommandStat{}
	for _, r := range c.Masters() {
		text, err := c.Do(r, "info", "commandstats")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(text, "\n") {
			name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
			name, isCmd := strings.CutPrefix(name, "cmdstat_")
			if !ok || !isCmd {
				continue
			}
			s := out[name]
			for _, kv := range strings.Split(rest, ",") {
				k, v, _ := strings.Cut(kv, "=")
				n, _ := strconv.ParseInt(v, 10, 64)
				switch k {
				case "calls":
					s.Calls += n
				case "usec":
					s.Usec += n
				}
			}
			if s.Calls > 0 {
				s.UsecPerCall = float64(s.Usec) / float64(s.Calls)
			}
			out[name] = s
		}
	}
	return out
}

// Stat sums one numeric INFO field (e.g. "total_net_input_bytes") over the
// running masters.
func (c *RedisCluster) Stat(section, field string) int64 {
	var n int64
	for _, r := range c.Masters() {
		v, _ := strconv.ParseInt(c.info(r, section, field), 10, 64)
		n += v
	}
	return n
}

// CPUSeconds sums the running masters' process CPU, user and system
// (INFO cpu), which CONFIG RESETSTAT does not reset.
func (c *RedisCluster) CPUSeconds() float64 {
	var sum float64
	for _, r := range c.Masters() {
		for _, f := range []string{"used_cpu_user", "used_cpu_sys"} {
			v, _ := strconv.ParseFloat(c.info(r, "cpu", f), 64)
			sum += v
		}
	}
	return sum
}

// FlushAll empties every running master (FLUSHALL).
func (c *RedisCluster) FlushAll() {
	c.t.Helper()
	for _, r := range c.Masters() {
		if _, err := c.Do(r, "flushall"); err != nil {
			c.t.Fatal(err)
		}
	}
}

// ResetStats zeroes every running node's statistics (CONFIG RESETSTAT).
func (c *RedisCluster) ResetStats() {
	for _, r := range c.Nodes {
		if r.Pid() != 0 {
			c.Do(r, "config", "resetstat")
		}
	}
}
