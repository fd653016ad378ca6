package function

import (
	"bufio"
	"bytes"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// scrape returns each sample line of /metrics as name{labels} -> value.
func scrape(t *testing.T, s *server) map[string]float64 {
	t.Helper()
	code, body := s.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsAfterKnownTurns(t *testing.T) {
	s := startServer(t, testConfig(t))
	before := scrape(t, s)
	for _, reason := range []string{"queue_full", "shutting_down", "state_unavailable", "expired"} {
		key := `sous_rejected_total{reason="` + reason + `"}`
		if v, ok := before[key]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want exported at 0 from start", key, v, ok)
		}
	}
	if before[`sous_model_info{device="cpu",model="intent"}`] != 1 {
		t.Errorf("sous_model_info missing")
	}

	jsonCT := map[string]string{"Content-Type": "application/json"}
	for i := range 3 {
		if code, _, body := s.post(t, "/turn", jsonCT, `{"session":"m`+strconv.Itoa(i)+`","text":"hello"}`); code != 200 {
			t.Fatalf("turn: %d %s", code, body)
		}
	}
	for range 2 {
		if code, _, _ := s.post(t, "/turn", jsonCT, `{"session":"bad id","text":"hello"}`); code != 400 {
			t.Fatalf("bad turn: %d", code)
		}
	}
	m := scrape(t, s)
	for key, want := range map[string]float64{
		`sous_requests_total{code="200",route="/turn"}`:   3,
		`sous_requests_total{code="400",route="/turn"}`:   2,
		`sous_batch_size_sum`:                             3 + before["sous_batch_size_sum"],
		`sous_queue_wait_seconds_count`:                   3 + before["sous_queue_wait_seconds_count"],
		`sous_turn_duration_seconds_count`:                3,
		`sous_state_duration_seconds_count{op="get"}`:     3,
		`sous_state_duration_seconds_count{op="save"}`:    3,
		`sous_queue_depth`:                                0,
		`sous_inference_duration_seconds_count`:           m["sous_batch_size_count"],
		`sous_rejected_total{reason="state_unavailable"}`: 0,
	} {
		if got := m[key]; got != want {
			t.Errorf("%s = %v, want %v", key, got, want)
		}
	}
}

// Every metric the Grafana dashboard queries is one sous exports.
func TestDashboardQueriesExportedMetrics(t *testing.T) {
	b, err := os.ReadFile("../knative/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, testConfig(t))
	if code, _, _ := s.post(t, "/turn", map[string]string{"Content-Type": "application/json"}, `{"session":"d","text":"hi"}`); code != 200 {
		t.Fatal("turn failed")
	}
	_, body := s.get(t, "/metrics")
	names := regexp.MustCompile(`sous_[a-z_]+`).FindAllString(string(b), -1)
	if len(names) < 8 {
		t.Fatalf("dashboard queries only %v", names)
	}
	for _, n := range names {
		if !strings.Contains(string(body), "\n"+n) && !strings.HasPrefix(string(body), n) {
			t.Errorf("dashboard queries %s, which /metrics does not export", n)
		}
	}
}
