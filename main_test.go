package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/internal/daprtest"
)

func freePort(t testing.TB) int { return daprtest.FreePort(t) }

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// TestMain removes the binary the tests built.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sous-test")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "sous")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sousBinary builds sous once per test run.
func sousBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// child is a running sous process.
type child struct {
	cmd  *exec.Cmd
	url  string
	port int
	logs *daprtest.LogBuffer
}

// startSous runs sous on port (0: a free one) with env added, and waits
// until it is ready.
func startSous(t *testing.T, port int, env ...string) *child { return startSousB(t, port, env...) }

// startSousB is startSous for tests and benchmarks.
func startSousB(t testing.TB, port int, env ...string) *child {
	t.Helper()
	if port == 0 {
		port = freePort(t)
	}
	cmd := exec.Command(sousBinary(t))
	cmd.Env = append(os.Environ(), append([]string{fmt.Sprintf("PORT=%d", port), "SOUS_ORT_LIB=" + model.FindLibrary()}, env...)...)
	logs := &daprtest.LogBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c := &child{cmd: cmd, url: fmt.Sprintf("http://127.0.0.1:%d", port), port: port, logs: logs}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(c.url + "/health/readiness")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c
			}
		}
		if daprtest.Exited(cmd.Process.Pid) {
			t.Fatalf("sous exited while starting:\n%s", logs.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("sous not ready after 60s:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loadClients runs n clients, each calling do(c, i) with i counting its
// requests, until the returned stop is called; a client whose do returns
// false ends early. stop waits for every client.
func loadClients(n int, do func(c, i int) bool) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for c := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				if !do(c, i) {
					return
				}
			}
		}()
	}
	return func() { close(done); wg.Wait() }
}

// SIGTERM under load: accepted turns complete, new ones get 503 with
// Retry-After (or find the listener closed), and the process exits 0.
func TestSIGTERMDrainsUnderLoad(t *testing.T) {
	c := startSous(t, 0, "SOUS_DRAIN_TIMEOUT=10s")
	cmd, url, logs := c.cmd, c.url, c.logs
	var mu sync.Mutex
	codes := map[int]int{}
	var bad []string
	var termSent time.Time
	client := &http.Client{Timeout: 15 * time.Second}
	stop := loadClients(16, func(c, i int) bool {
		body := fmt.Sprintf(`{"session":"d%d","text":"hello there %d"}`, c, i)
		resp, err := client.Post(url+"/turn", "application/json", strings.NewReader(body))
		mu.Lock()
		defer mu.Unlock()
		sent := !termSent.IsZero()
		if err != nil {
			if !sent {
				t.Errorf("request before SIGTERM failed: %v", err)
			}
			return false // the listener is gone
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		codes[resp.StatusCode]++
		switch {
		case resp.StatusCode == http.StatusOK:
		case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" && sent:
		default:
			bad = append(bad, fmt.Sprintf("%d %s", resp.StatusCode, b))
		}
		return true
	})
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	termSent = time.Now()
	mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); exited <- <-exited })
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Errorf("exit: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("sous did not exit within 20s of SIGTERM\n%s", logs.String())
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("%d unexpected answers, e.g. %s", len(bad), bad[0])
	}
	if codes[http.StatusOK] == 0 {
		t.Error("no turn succeeded before SIGTERM")
	}
	if !strings.Contains(logs.String(), `"msg":"draining"`) || !strings.Contains(logs.String(), `"msg":"stopped"`) {
		t.Errorf("drain not logged:\n%s", logs.String())
	}
	t.Logf("answers: %v; exit %s after SIGTERM", codes, time.Since(termSent).Round(time.Millisecond))
}

func TestInvalidConfigurationFailsStartup(t *testing.T) {
	cmd := exec.Command(sousBinary(t))
	cmd.Env = append(os.Environ(), "SOUS_MAX_BATCH=zero", "SOUS_DEVICE=tpu")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want status 1\n%s", err, out)
	}
	for _, want := range []string{"SOUS_MAX_BATCH", "SOUS_DEVICE"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("start-up error does not name %s:\n%s", want, out)
		}
	}
}
