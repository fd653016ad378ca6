package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"image/color"
	"math"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// step is one stretch of a load ramp at a constant rate.
type step struct {
	Rate float64       // requests per second
	For  time.Duration // how long
}

// stepPacer paces vegeta through steps, each at its constant rate, with no
// pause between them (requests in flight at a step's end keep running).
// When every worker is busy and the attack falls behind, the backlog beyond
// a quarter second is forgiven, not sent later in a burst: what is offered
// each second is the step's rate or what the workers could send.
type stepPacer struct {
	steps    []step
	forgiven float64 // hits dropped from the schedule
}

func (p *stepPacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	var start time.Duration
	expected := -p.forgiven
	for _, s := range p.steps {
		if elapsed < start+s.For {
			expected += s.Rate * (elapsed - start).Seconds()
			if s.Rate <= 0 {
				return 0, false
			}
			if behind := expected - float64(hits) - s.Rate/4; behind > 0 {
				p.forgiven += behind
				expected -= behind
			}
			if float64(hits) < expected {
				return 0, false
			}
			return time.Duration((float64(hits) + 1 - expected) / s.Rate * float64(time.Second)), false
		}
		expected += s.Rate * s.For.Seconds()
		start += s.For
	}
	return 0, true
}

func (p *stepPacer) Rate(elapsed time.Duration) float64 {
	var start time.Duration
	for _, s := range p.steps {
		if elapsed < start+s.For {
			return s.Rate
		}
		start += s.For
	}
	return 0
}

// turnTargeter sends /turn through Traefik, each request a turn of one of
// sessions sessions (so turns of a session queue behind each other, as a
// conversation's do).
func turnTargeter(ingress, host, prefix string, sessions int) vegeta.Targeter {
	var mu sync.Mutex
	n := 0
	return func(t *vegeta.Target) error {
		mu.Lock()
		i := n
		n++
		mu.Unlock()
		t.Method = http.MethodPost
		t.URL = "http://" + ingress + "/turn"
		t.Header = http.Header{"Content-Type": {"application/json"}, "Host": {host}}
		t.Body = []byte(fmt.Sprintf(`{"session":"%s-%d","text":"hello there, how are you?"}`, prefix, i%sessions))
		return nil
	}
}

// Second is one second of the autoscaling timeline.
type Second struct {
	T            int            `json:"t"`                       // seconds since the load began
	Offered      float64        `json:"offered_rps"`             // requests sent in this second
	Answered     float64        `json:"answered_rps"`            // answers (any status) completed in this second
	OK           float64        `json:"ok_rps"`                  // of them 200
	P50ms        float64        `json:"p50_ms"`                  // latency of this second's answers
	P99ms        float64        `json:"p99_ms"`                  //
	DesiredPods  int            `json:"desired_pods"`            // the KPA's desired scale
	ReadyPods    int            `json:"ready_pods"`              // pods of the revision that are Ready
	InFlight     map[string]int `json:"in_flight"`               // sous_queue_depth per pod
	InFlightPods int            `json:"in_flight_sum"`           // their sum
	Other        map[string]int `json:"other_answers,omitempty"` // answers other than 200, by status, completed in this second
}

// Timeline is what TestSousAutoscaling writes (docs/autoscaling.json).
type Timeline struct {
	Machine         string         `json:"machine"`
	Command         string         `json:"command"`
	SaturationRPS   float64        `json:"one_pod_saturation_rps"`
	Ramp            []step         `json:"ramp"`
	Seconds         []Second       `json:"seconds"`
	Codes           map[string]int `json:"answers_by_status"`
	PeakPods        int            `json:"peak_ready_pods"`
	ScaleUpS        float64        `json:"scale_up_s"`   // load start to ≥3 ready pods
	ScaleDownS      float64        `json:"scale_down_s"` // ramp end to back at the minimum
	ColdStartMs     float64        `json:"cold_start_first_request_ms,omitempty"`
	NewPodReadyMs   []float64      `json:"new_pod_start_to_ready_ms"`
	RetryAfterOn503 bool           `json:"retry_after_on_every_503"`
	Samples         []string       `json:"unexpected_answer_samples,omitempty"` // the first few answers other than 200 and 503
}

// sampler records, each second, the KPA's desired scale, the ready pods of
// a revision and each pod's in-flight turns (sous_queue_depth).
type sampler struct {
	c        *Cluster
	ns, rev  string
	mu       sync.Mutex
	desired  map[int]int
	ready    map[int]int
	inFlight map[int]map[string]int
	podReady map[string]float64 // pod → start-to-ready ms, for pods seen
}

func (s *sampler) run(ctx context.Context, start time.Time) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			sec := int(now.Sub(start).Seconds())
			desired := -1
			if pa, err := s.c.Get(ctx, paGVR, s.ns, s.rev); err == nil {
				if v, ok, _ := unstructured.NestedInt64(pa.Object, "status", "desiredScale"); ok {
					desired = int(v)
				}
			}
			pods, _ := s.c.Pods(ctx, s.ns, "serving.knative.dev/revision="+s.rev)
			ready := 0
			depth := map[string]int{}
			var dmu sync.Mutex
			var wg sync.WaitGroup
			for _, p := range pods {
				if p.DeletionTimestamp != nil || !podReady(p) {
					continue
				}
				ready++
				wg.Add(1)
				go func() {
					defer wg.Done()
					if d, err := queueDepth(ctx, p.Status.PodIP); err == nil {
						dmu.Lock()
						depth[p.Name] = d
						dmu.Unlock()
					}
				}()
				s.mu.Lock()
				if _, seen := s.podReady[p.Name]; !seen {
					s.podReady[p.Name] = float64(startToReady(p).Milliseconds())
				}
				s.mu.Unlock()
			}
			wg.Wait()
			s.mu.Lock()
			s.desired[sec], s.ready[sec], s.inFlight[sec] = desired, ready, depth
			s.mu.Unlock()
		}
	}
}

// queueDepth reads sous_queue_depth from a pod's /metrics.
func queueDepth(ctx context.Context, ip string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ip+":8080/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "sous_queue_depth") {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			return int(v), err
		}
	}
	return 0, fmt.Errorf("no sous_queue_depth")
}

// timeline folds vegeta's results and the samples into seconds.
func (s *sampler) timeline(start time.Time, results []vegeta.Result, seconds int) []Second {
	out := make([]Second, seconds)
	lat := make([][]float64, seconds)
	for i := range out {
		out[i].T = i
	}
	for _, r := range results {
		if sec := int(r.Timestamp.Sub(start).Seconds()); sec >= 0 && sec < seconds {
			out[sec].Offered++
		}
		if sec := int(r.Timestamp.Add(r.Latency).Sub(start).Seconds()); sec >= 0 && sec < seconds {
			out[sec].Answered++
			if r.Code == http.StatusOK {
				out[sec].OK++
			}
			lat[sec] = append(lat[sec], float64(r.Latency.Microseconds())/1000)
			if r.Code != http.StatusOK {
				if out[sec].Other == nil {
					out[sec].Other = map[string]int{}
				}
				out[sec].Other[strconv.Itoa(int(r.Code))]++
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range out {
		sort.Float64s(lat[i])
		out[i].P50ms, out[i].P99ms = quantile(lat[i], 0.5), quantile(lat[i], 0.99)
		if _, ok := s.ready[i]; !ok && i > 0 {
			// A sample can take longer than a second on a busy node: the
			// second without one keeps the one before.
			out[i].DesiredPods, out[i].ReadyPods, out[i].InFlight = out[i-1].DesiredPods, out[i-1].ReadyPods, out[i-1].InFlight
			out[i].InFlightPods = out[i-1].InFlightPods
			continue
		}
		out[i].DesiredPods, out[i].ReadyPods, out[i].InFlight = s.desired[i], s.ready[i], s.inFlight[i]
		for _, d := range s.inFlight[i] {
			out[i].InFlightPods += d
		}
	}
	return out
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(math.Min(float64(len(sorted)-1), q*float64(len(sorted))))]
}

// plotTimeline draws the timeline as three stacked panels: request rates,
// latency, pods.
func plotTimeline(path string, tl *Timeline) error {
	blue, red, green, grey := color.RGBA{31, 119, 180, 255}, color.RGBA{214, 39, 40, 255}, color.RGBA{44, 160, 44, 255}, color.RGBA{127, 127, 127, 255}
	series := func(f func(Second) float64) plotter.XYs {
		xy := make(plotter.XYs, len(tl.Seconds))
		for i, s := range tl.Seconds {
			xy[i] = plotter.XY{X: float64(s.T), Y: f(s)}
		}
		return xy
	}
	panel := func(title, ylabel string, lines ...struct {
		label string
		xy    plotter.XYs
		c     color.Color
		dash  bool
	}) (*plot.Plot, error) {
		p := plot.New()
		p.Title.Text = title
		p.Y.Label.Text = ylabel
		p.X.Label.Text = "seconds since the load began"
		p.Legend.Top, p.Legend.Left = true, true
		for _, l := range lines {
			line, err := plotter.NewLine(l.xy)
			if err != nil {
				return nil, err
			}
			line.Color = l.c
			if l.dash {
				line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			}
			p.Add(line)
			p.Legend.Add(l.label, line)
		}
		return p, nil
	}
	type ln = struct {
		label string
		xy    plotter.XYs
		c     color.Color
		dash  bool
	}
	rates, err := panel(fmt.Sprintf("sous on Knative: load ramp through Traefik (one-pod saturation %.0f turns/s)", tl.SaturationRPS), "turns/s",
		ln{"offered", series(func(s Second) float64 { return s.Offered }), grey, true},
		ln{"answered 200", series(func(s Second) float64 { return s.OK }), blue, false})
	if err != nil {
		return err
	}
	latency, err := panel("latency of the answers completed each second", "ms",
		ln{"p50", series(func(s Second) float64 { return s.P50ms }), blue, false},
		ln{"p99", series(func(s Second) float64 { return s.P99ms }), red, true})
	if err != nil {
		return err
	}
	pods, err := panel("Knative autoscaler (KPA, concurrency)", "pods / turns in flight",
		ln{"desired pods", series(func(s Second) float64 { return float64(s.DesiredPods) }), red, true},
		ln{"ready pods", series(func(s Second) float64 { return float64(s.ReadyPods) }), green, false},
		ln{"turns queued in sous, all pods / 10", series(func(s Second) float64 { return float64(s.InFlightPods) / 10 }), grey, true})
	if err != nil {
		return err
	}
	return writeSVG(path, 9*vg.Inch, rates, latency, pods)
}

// writeSVG draws panels stacked in one column, 8 inches wide and h tall,
// into an SVG file at path.
func writeSVG(path string, h vg.Length, panels ...*plot.Plot) error {
	canvas := vgsvg.New(8*vg.Inch, h)
	tiles := draw.Tiles{Rows: len(panels), Cols: 1, PadY: vg.Points(8), PadTop: vg.Points(4), PadBottom: vg.Points(4)}
	plots := make([][]*plot.Plot, len(panels))
	for i, p := range panels {
		plots[i] = []*plot.Plot{p}
	}
	canvases := plot.Align(plots, tiles, draw.New(canvas))
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := canvas.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
