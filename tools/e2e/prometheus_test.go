package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// prometheus is Debian's Prometheus, run on the host for the length of the
// tests, discovering sous's pods through the cluster's API (the pod network
// is reachable from the host) and scraping sous's /metrics and
// queue-proxy's.
type prometheus struct {
	cmd  *exec.Cmd
	addr string
	log  string
	done chan struct{}
}

func startPrometheus(c *Cluster, dir string, namespaces []string) (*prometheus, error) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		return nil, fmt.Errorf("prometheus not installed (make e2e installs Debian's): %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	// Debian builds Prometheus without Kubernetes discovery, so the
	// targets come from a file that discover keeps up to date from the
	// cluster's pod list.
	sd := filepath.Join(dir, "targets.json")
	cfg := fmt.Sprintf(`global: {scrape_interval: 2s, evaluation_interval: 2s}
scrape_configs:
  - job_name: sous
    file_sd_configs:
      - files: [%q]
        refresh_interval: 2s
`, sd)
	conf := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	p := &prometheus{addr: addr, log: filepath.Join(dir, "prometheus.log"), done: make(chan struct{})}
	if err := discover(c, namespaces, sd); err != nil {
		return nil, err
	}
	go func() {
		for {
			select {
			case <-p.done:
				return
			case <-time.After(time.Second):
				discover(c, namespaces, sd)
			}
		}
	}()
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			p.stop()
			b, _ := os.ReadFile(p.log)
			return nil, fmt.Errorf("prometheus not ready in 30s: %s", tail(string(b), 2000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (p *prometheus) stop() {
	close(p.done)
	if p.cmd.Process != nil {
		p.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
		}
	}
}

// discover writes the scrape targets of the sous pods in namespaces, in
// Prometheus's file_sd format: sous's /metrics on 8080 and queue-proxy's
// user metrics on 9091, labelled with namespace, pod and container.
func discover(c *Cluster, namespaces []string, path string) error {
	type group struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	groups := []group{}
	for _, ns := range namespaces {
		pods, err := c.Pods(context.Background(), ns, "serving.knative.dev/service=sous")
		if err != nil {
			return err
		}
		for _, p := range pods {
			if p.Status.PodIP == "" || p.Status.Phase != corev1.PodRunning {
				continue
			}
			for container, port := range map[string]string{"sous": "8080", "queue-proxy": "9091"} {
				groups = append(groups, group{Targets: []string{p.Status.PodIP + ":" + port},
					Labels: map[string]string{"namespace": ns, "pod": p.Name, "container": container}})
			}
		}
	}
	b, err := json.Marshal(groups)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// promSeries is one series of an instant query's answer.
type promSeries struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// query runs an instant query and returns its series.
func (p *prometheus) query(q string) ([]promSeries, error) {
	resp, err := http.Get("http://" + p.addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []promSeries `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", q, r.Error)
	}
	return r.Data.Result, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
