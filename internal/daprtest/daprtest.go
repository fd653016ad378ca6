// Package daprtest starts real redis-server and daprd processes on free
// loopback ports for integration tests and benchmarks, and stops them when
// the test ends.
package daprtest

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// T is the part of testing.TB the helpers use, so that the benchmark
// harness can start the same processes outside a test.
type T interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		// Below the kernel's ephemeral range (32768 and up), which outgoing
		// connections draw from: a port found free there can be taken as a
		// source port by a load test before the server binds it.
		port := 20000 + rand.IntN(12000)
		if portsGiven[port] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		portsGiven[port] = true
		return port
	}
	t.Fatal("no free loopback port in 20000-31999")
	return 0
}

// Exited reports whether the child process pid has exited (it is a zombie
// until waited for) or is gone.
func Exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{} // never hand out a port twice in a process
)

// RepoRoot finds the folder holding go.mod, from the working folder up.
func RepoRoot(t T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil && !strings.Contains(dir, "tools") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("repository root not found")
		}
		dir = parent
	}
}

// LogBuffer is a goroutine-safe buffer for a child's output or a logger's.
type LogBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Redis is a redis-server child process.
type Redis struct {
	t     T
	Port  int
	dir   string
	extra []string // more redis-server flags (a cluster node's)
	cmd   *exec.Cmd
	logs  LogBuffer
}

// StartRedis starts redis-server on a free loopback port, persisting
// every write (append-only file: written before each reply, so a killed
// process loses nothing; fsync each second) so that a Stop and Start is
// a blip, as with a production Redis, not a data loss; it is stopped when
// the test ends.
func StartRedis(t T) *Redis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server not found: run `make test`, which installs it")
	}
	r := &Redis{t: t, Port: FreePort(t), dir: t.TempDir()}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Addr is host:port.
func (r *Redis) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.Port) }

// Start (re)starts the server on its port and waits until it answers PING.
func (r *Redis) Start() {
	r.t.Helper()
	args := []string{"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--dir", r.dir, "--protected-mode", "yes"}
	r.cmd = exec.Command("redis-server", append(args, r.extra...)...)
	r.cmd.Stdout, r.cmd.Stderr = &r.logs, &r.logs
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !r.ping() {
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on %d did not answer:\n%s", r.Port, r.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *Redis) ping() bool {
	conn, err := net.DialTimeout("tcp", r.Addr(), 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// Pid is the running server's process id, 0 when stopped.
func (r *Redis) Pid() int {
	if r.cmd == nil || r.cmd.Process == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// Stop kills the server; what it acknowledged is on disk.
func (r *Redis) Stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
		r.cmd = nil
	}
}

// Daprd is a daprd child process serving one app.
type Daprd struct {
	t                                     T
	HTTPPort, GRPCPort, MetricsPort, Port int // Port: internal gRPC
	args                                  []string
	env                                   []string
	cmd                                   *exec.Cmd
	logs                                  LogBuffer
}

// DaprdParams describes one sidecar.
type DaprdParams struct {
	AppID   string
	AppPort int
	// Redis backs the state store and pub/sub; or Cluster does, through
	// components/redis-cluster/statestore.yaml and a pub/sub of
	// redisType cluster.
	Redis   *Redis
	Cluster *RedisCluster
	// NameDB is the SQLite file of name resolution; sidecars that must find
	// each other share it. Default: one per test.
	NameDB string
	// Env is added to daprd's environment (e.g. APP_API_TOKEN).
	Env []string
	// Resiliency, a path from the repository root, adds those resiliency
	// policies (e.g. components/resiliency.yaml, the deployed ones).
	Resiliency string
	// Placement, if set, is the placement service the sidecar hosts
	// actors with (advertising 127.0.0.1); the state store is then the
	// actor state store too.
	Placement *Placement
}

// Binary returns the daprd that `make daprd` built.
func Binary(t T) string {
	t.Helper()
	if p := os.Getenv("SOUS_DAPRD"); p != "" {
		return p
	}
	p := filepath.Join(RepoRoot(t), "bin", "daprd")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v (run `make test`, which builds it)", p, err)
	}
	return p
}

// StartDaprd writes the repo's components/local set, pointed at p.Redis,
// into a temporary folder and starts daprd on free loopback ports. It
// returns once daprd's outbound health check answers.
func StartDaprd(t T, p DaprdParams) *Daprd {
	t.Helper()
	dir := t.TempDir()
	if p.NameDB == "" {
		p.NameDB = filepath.Join(dir, "names.db")
	}
	root := RepoRoot(t)
	for _, name := range []string{"statestore.yaml", "pubsub.yaml", "config.yaml"} {
		b, err := os.ReadFile(filepath.Join(root, "components", "local", name))
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		switch {
		case p.Cluster != nil && name == "statestore.yaml":
			b, err := os.ReadFile(filepath.Join(root, "components", "redis-cluster", name))
			if err != nil {
				t.Fatal(err)
			}
			s = PlainSecrets(string(b), p.Cluster.Hosts())
		case p.Cluster != nil:
			s = strings.ReplaceAll(s, "value: localhost:6379", "value: "+p.Cluster.Hosts()+"\n    - name: redisType\n      value: cluster")
		default:
			s = strings.ReplaceAll(s, "localhost:6379", p.Redis.Addr())
		}
		s = strings.ReplaceAll(s, "/tmp/sous-dapr-nr.db", p.NameDB)
		if p.Placement != nil && name == "statestore.yaml" {
			s = strings.TrimRight(s, "\n") + "\n    - name: actorStateStore\n      value: \"true\"\n"
		}
		target := filepath.Join(dir, "resources", name)
		if name == "config.yaml" {
			target = filepath.Join(dir, name)
		}
		os.MkdirAll(filepath.Dir(target), 0o755)
		if err := os.WriteFile(target, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if p.Resiliency != "" {
		b, err := os.ReadFile(filepath.Join(root, p.Resiliency))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "resources", "resiliency.yaml"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := &Daprd{t: t, HTTPPort: FreePort(t), GRPCPort: FreePort(t), MetricsPort: FreePort(t), Port: FreePort(t), env: p.Env}
	d.args = []string{
		"--app-id", p.AppID, "--app-port", strconv.Itoa(p.AppPort), "--app-protocol", "http",
		"--app-channel-address", "127.0.0.1",
		"--dapr-http-port", strconv.Itoa(d.HTTPPort), "--dapr-grpc-port", strconv.Itoa(d.GRPCPort),
		"--dapr-internal-grpc-port", strconv.Itoa(d.Port), "--metrics-port", strconv.Itoa(d.MetricsPort),
		"--dapr-listen-addresses", "127.0.0.1", "--metrics-listen-address", "127.0.0.1",
		"--dapr-internal-grpc-listen-address", "127.0.0.1",
		"--resources-path", filepath.Join(dir, "resources"), "--config", filepath.Join(dir, "config.yaml"),
		"--log-level", "warn",
	}
	if p.Placement != nil {
		d.args = append(d.args, "--placement-host-address", p.Placement.Addr())
		// The address daprd advertises to placement, which other sidecars
		// dial for this one's actors.
		d.env = append(d.env, "DAPR_HOST_IP=127.0.0.1")
	}
	d.Start()
	t.Cleanup(d.Kill)
	return d
}

// Start (re)starts daprd on its ports and waits for its outbound health.
func (d *Daprd) Start() {
	d.t.Helper()
	d.cmd = exec.Command(Binary(d.t), d.args...)
	d.cmd.Env = append(os.Environ(), d.env...)
	d.cmd.Stdout, d.cmd.Stderr = &d.logs, &d.logs
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/v1.0/healthz/outbound", d.HTTPPort)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return
			}
		}
		if Exited(d.cmd.Process.Pid) {
			d.t.Fatalf("daprd exited while starting:\n%s", d.logs.String())
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("daprd not healthy after 60s:\n%s", d.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops daprd at once.
func (d *Daprd) Kill() {
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Kill()
		d.cmd.Wait()
		d.cmd = nil
	}
}

// Pid is the running daprd's process id, 0 when stopped.
func (d *Daprd) Pid() int {
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Logs returns what daprd printed.
func (d *Daprd) Logs() string { return d.logs.String() }

// URL is daprd's HTTP API base.
func (d *Daprd) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", d.HTTPPort) }

// secretRef matches a secretKeyRef block of the sous-redis Secret.
var secretRef = regexp.MustCompile(`(?m)^(\s+)secretKeyRef:\n\s+name: sous-redis\n\s+key: (\w+).*$`)

// PlainSecrets replaces a component's references to the sous-redis Secret
// (tests have no Kubernetes secrets) with plain values: host for its host
// key, "" for the others (the password).
func PlainSecrets(component, host string) string {
	return secretRef.ReplaceAllStringFunc(component, func(m string) string {
		sub := secretRef.FindStringSubmatch(m)
		if sub[2] == "host" {
			return sub[1] + "value: " + host
		}
		return sub[1] + `value: ""`
	})
}

// LoadResources starts daprd on resourcesDir (components, resiliency) and
// reports whether it came up healthy; daprd stopping instead, or not being
// healthy within 30s, is an error carrying its log.
func LoadResources(t T, resourcesDir string) error {
	t.Helper()
	httpPort := FreePort(t)
	cmd := exec.Command(Binary(t), "--app-id", "sous", "--dapr-http-port", strconv.Itoa(httpPort),
		"--dapr-grpc-port", strconv.Itoa(FreePort(t)), "--dapr-internal-grpc-port", strconv.Itoa(FreePort(t)),
		"--metrics-port", strconv.Itoa(FreePort(t)), "--dapr-listen-addresses", "127.0.0.1",
		"--metrics-listen-address", "127.0.0.1", "--dapr-internal-grpc-listen-address", "127.0.0.1",
		"--resources-path", resourcesDir, "--log-level", "info")
	var logs LogBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	deadline := time.After(30 * time.Second)
	url := fmt.Sprintf("http://127.0.0.1:%d/v1.0/healthz", httpPort)
	for {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("daprd stopped (%v):\n%s", err, logs.String())
		case <-deadline:
			return fmt.Errorf("daprd not healthy after 30s:\n%s", logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return nil
			}
		}
	}
}
