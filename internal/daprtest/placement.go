package daprtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// Placement is Dapr's placement service (actor placement), a child
// process on free loopback ports.
type Placement struct {
	t                 T
	Port, HealthzPort int
	cmd               *exec.Cmd
	logs              LogBuffer
}

// PlacementBinary returns the placement service that `make placement`
// built.
func PlacementBinary(t T) string {
	t.Helper()
	if p := os.Getenv("SOUS_PLACEMENT_BIN"); p != "" {
		return p
	}
	p := filepath.Join(RepoRoot(t), "bin", "placement")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v (run `make test`, which builds it)", p, err)
	}
	return p
}

// StartPlacement starts the placement service (one in-memory Raft node,
// no TLS) and waits until it is healthy; it is stopped when the test ends.
func StartPlacement(t T) *Placement {
	t.Helper()
	p := &Placement{t: t, Port: FreePort(t), HealthzPort: FreePort(t)}
	p.cmd = exec.Command(PlacementBinary(t),
		"--id", "dapr-placement-0", "--initial-cluster", fmt.Sprintf("dapr-placement-0=127.0.0.1:%d", FreePort(t)),
		"--port", strconv.Itoa(p.Port), "--listen-address", "127.0.0.1",
		"--healthz-port", strconv.Itoa(p.HealthzPort), "--metadata-enabled",
		"--enable-metrics=false", "--tls-enabled=false", "--log-level", "warn")
	p.cmd.Stdout, p.cmd.Stderr = &p.logs, &p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", p.HealthzPort))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return p
			}
		}
		if Exited(p.cmd.Process.Pid) {
			t.Fatalf("placement exited while starting:\n%s", p.logs.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("placement not healthy after 30s:\n%s", p.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Addr is the placement service's host:port, for daprd's
// --placement-host-address.
func (p *Placement) Addr() string { return fmt.Sprintf("127.0.0.1:%d", p.Port) }

// Hosts returns the sidecars that placement's table lists as hosting
// actorType, by their host:port.
func (p *Placement) Hosts(actorType string) ([]string, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/placement/state", p.HealthzPort))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st struct {
		Tables map[string]struct {
			Hosts []struct {
				Name     string   `json:"name"`
				Port     int64    `json:"port"`
				Entities []string `json:"entities"`
			} `json:"hosts"`
		} `json:"tables"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("placement state: %w", err)
	}
	var hosts []string
	for _, table := range st.Tables {
		for _, h := range table.Hosts {
			for _, e := range h.Entities {
				if e == actorType {
					hosts = append(hosts, fmt.Sprintf("%s:%d", h.Name, h.Port))
				}
			}
		}
	}
	return hosts, nil
}

// WaitHosts waits until placement lists n hosts of actorType.
func (p *Placement) WaitHosts(actorType string, n int, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		hosts, err := p.Hosts(actorType)
		if err == nil && len(hosts) == n {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("placement lists hosts %v of %s (err %v), want %d, after %s:\n%s", hosts, actorType, err, n, timeout, p.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Logs returns what placement printed.
func (p *Placement) Logs() string { return p.logs.String() }

// Kill stops the service at once.
func (p *Placement) Kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		p.cmd = nil
	}
}

// WaitAgree waits until every sidecar of daprds places actors of
// actorType alike: a few probe ids, each called (method) through every
// sidecar, answer the same from all of them. Placement's table reaching
// each sidecar (dissemination) follows the service's own table by a
// moment; until it has, two sidecars may place one id on two hosts.
func WaitAgree(t T, daprds []*Daprd, actorType, method string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 5 * time.Second}
	call := func(d *Daprd, id string) (string, error) {
		req, _ := http.NewRequest(http.MethodPut, d.URL()+"/v1.0/actors/"+actorType+"/"+id+"/method/"+method, nil)
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("%d %s", resp.StatusCode, b)
		}
		return string(b), nil
	}
	for {
		last, agreed := "", true
		for i := 0; i < 12 && agreed; i++ {
			id := fmt.Sprintf("probe-%d", i)
			var first string
			for k, d := range daprds {
				got, err := call(d, id)
				if err != nil || k > 0 && got != first {
					agreed, last = false, fmt.Sprintf("%s through sidecar %d: %q (%v), through 0: %q", id, k, got, err, first)
					break
				}
				if k == 0 {
					first = got
				}
			}
		}
		if agreed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecars do not place %s alike after %s: %s", actorType, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
