package e2e

// The end-to-end tests of make e2e, in the order they run: each reports
// what it saw with t.Logf, for the closing note and docs/operations.md.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// 1. The KService becomes Ready; its pod runs sous, queue-proxy and daprd
// (the last as a native sidecar).
func TestSousReady(t *testing.T) {
	d := sous(t)
	ctx := context.Background()
	pods, err := sousPods(ctx, d.c, sousNS)
	if err != nil || len(pods) == 0 {
		t.Fatalf("sous pods: %d, %v", len(pods), err)
	}
	for _, p := range pods {
		// daprd runs as a native sidecar (an init container that keeps
		// running, dapr.io/enable-native-sidecar), started before sous.
		var names []string
		for _, c := range p.Spec.InitContainers {
			if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
				names = append(names, c.Name)
			}
		}
		for _, c := range p.Spec.Containers {
			names = append(names, c.Name)
		}
		sort.Strings(names)
		if strings.Join(names, ",") != "daprd,queue-proxy,sous" {
			t.Errorf("pod %s runs %v, want sous, queue-proxy and daprd", p.Name, names)
		}
		t.Logf("pod %s: containers %v, start-to-ready %s", p.Name, names, startToReady(p))
		logs, _ := d.c.Logs(ctx, sousNS, p.Name, "sous")
		if m := regexp.MustCompile(`"start_to_ready_ms":(\d+)`).FindStringSubmatch(logs); m != nil {
			t.Logf("pod %s: sous logged start_to_ready_ms %s", p.Name, m[1])
		}
	}
}

// startToReady is the time from a pod's creation to its Ready condition.
func startToReady(p corev1.Pod) time.Duration {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return c.LastTransitionTime.Sub(p.CreationTimestamp.Time)
		}
	}
	return -1
}

// 2. Knative URL callers, through Traefik with the route's Host header.
func TestSousKnativeURL(t *testing.T) {
	d := sous(t)
	ctx := context.Background()
	session := fmt.Sprintf("url-%d", time.Now().UnixNano())
	ce := func(id string) http.Header {
		return http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {id}, "Ce-Source": {"/e2e"},
			"Ce-Type": {"ai.sous.turn"}, "Ce-Subject": {session}, "Content-Type": {"application/json"}}
	}

	// Binary mode: the reply is a binary-mode event.
	resp, body, err := d.c.Route(ctx, http.MethodPost, d.host, "/", ce(session+"-1"), []byte(`{"text":"hello there"}`))
	if err != nil {
		t.Fatal(err)
	}
	var r turnReply
	json.Unmarshal(body, &r)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Ce-Type") != "ai.sous.turn.reply" ||
		resp.Header.Get("Ce-Subject") != session || r.Turn != 1 {
		t.Fatalf("binary event: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	t.Logf("binary event: %d, Ce-Type %s, Ce-Id %s, data %s", resp.StatusCode, resp.Header.Get("Ce-Type"), resp.Header.Get("Ce-Id"), body)

	// Structured mode: the reply is a structured event.
	structured := fmt.Sprintf(`{"specversion":"1.0","id":"%s-2","source":"/e2e","type":"ai.sous.turn","subject":"%s",`+
		`"datacontenttype":"application/json","data":{"text":"thanks a lot"}}`, session, session)
	resp, body, err = d.c.Route(ctx, http.MethodPost, d.host, "/", http.Header{"Content-Type": {"application/cloudevents+json"}}, []byte(structured))
	if err != nil {
		t.Fatal(err)
	}
	var ev struct {
		Type    string    `json:"type"`
		Subject string    `json:"subject"`
		Data    turnReply `json:"data"`
	}
	json.Unmarshal(body, &ev)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/cloudevents+json") ||
		ev.Type != "ai.sous.turn.reply" || ev.Data.Turn != 2 {
		t.Fatalf("structured event: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	t.Logf("structured event: %d, %s, type %s, turn %d, output %s", resp.StatusCode, resp.Header.Get("Content-Type"), ev.Type, ev.Data.Turn, ev.Data.Output)

	// Plain JSON /turn continues the same session.
	r, code, err := postTurn(ctx, "http://"+d.c.Ingress, d.host, session, "bye for now")
	if err != nil || code != http.StatusOK || r.Turn != 3 {
		t.Fatalf("/turn: %d %+v %v", code, r, err)
	}
	t.Logf("/turn: %d, turn %d, output %s", code, r.Turn, r.Output)

	// Open Inference Protocol v2, tensors in and out.
	infer := `{"inputs":[{"name":"tokens","shape":[1,3],"datatype":"INT64","data":[5,6,7]},` +
		`{"name":"state_in","shape":[1,7],"datatype":"FP32","data":[0,0,0,0,0,0,0]}]}`
	resp, body, err = d.c.Route(ctx, http.MethodPost, d.host, "/v2/models/"+d.model+"/infer", http.Header{"Content-Type": {"application/json"}}, []byte(infer))
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"outputs"`) {
		t.Fatalf("OIP infer: %v %v %s", resp, err, body)
	}
	t.Logf("OIP v2 /v2/models/%s/infer: %d, %.120s…", d.model, resp.StatusCode, body)

	// Malformed events get their 4xx, with a body that says why.
	for _, tc := range []struct {
		name   string
		header http.Header
		body   string
		want   int
	}{
		{"wrong type", func() http.Header { h := ce(session + "-x"); h.Set("Ce-Type", "com.example.other"); return h }(), `{"text":"hi"}`, 400},
		{"bad JSON", ce(session + "-y"), `{"text":`, 400},
		{"no event id", func() http.Header { h := ce(session + "-z"); h.Del("Ce-Id"); return h }(), `{"text":"hi"}`, 400},
		{"bad session id", func() http.Header { h := ce(session + "-w"); h.Set("Ce-Subject", "no spaces allowed"); return h }(), `{"text":"hi"}`, 400},
		{"plain JSON, no event", http.Header{"Content-Type": {"application/json"}}, `{"text":"hi"}`, 415},
		{"text/plain", http.Header{"Content-Type": {"text/plain"}}, `hi`, 415},
	} {
		resp, body, err := d.c.Route(ctx, http.MethodPost, d.host, "/", tc.header, []byte(tc.body))
		if err != nil || resp.StatusCode != tc.want {
			t.Errorf("%s: %v %v %s, want %d", tc.name, resp.StatusCode, err, body, tc.want)
			continue
		}
		t.Logf("malformed (%s): %d %s", tc.name, resp.StatusCode, strings.TrimSpace(string(body)))
	}
}

// 3. Any pod continues any conversation: with two pods up, one session's
// turns alternate between them and count on without a gap; killing the pod
// that served turn N loses nothing; Redis holds the transcript under
// Dapr's key.
func TestSousAnyPodContinues(t *testing.T) {
	d := sous(t)
	ctx := context.Background()
	c := d.c
	if err := mergePatch(ctx, c, sousNS, `{"spec":{"template":{"metadata":{"annotations":{"autoscaling.knative.dev/min-scale":"2"}}}}}`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mergePatch(ctx, c, sousNS, `{"spec":{"template":{"metadata":{"annotations":{"autoscaling.knative.dev/min-scale":"1"}}}}}`)
		c.WaitReady(ctx, ksvcGVR, sousNS, "sous", 3*time.Minute)
	})
	var pods []corev1.Pod
	err := WaitFor(ctx, "two ready pods of the min-scale 2 revision", 4*time.Minute, func(ctx context.Context) (bool, string) {
		rev, err := latestReady(ctx, c, sousNS, 2)
		if err != nil {
			return false, err.Error()
		}
		all, err := c.Pods(ctx, sousNS, "serving.knative.dev/revision="+rev)
		if err != nil {
			return false, err.Error()
		}
		pods = pods[:0]
		for _, p := range all {
			if p.DeletionTimestamp == nil && podReady(p) {
				pods = append(pods, p)
			}
		}
		return len(pods) >= 2, fmt.Sprintf("revision %s: %d ready pods", rev, len(pods))
	})
	if err != nil {
		t.Fatal(err)
	}
	a, b := pods[0], pods[1]
	// Each pod through its queue-proxy (port 8012), as the activator and
	// Traefik reach it.
	via := map[string]string{a.Name: "http://" + a.Status.PodIP + ":8012", b.Name: "http://" + b.Status.PodIP + ":8012"}
	session := fmt.Sprintf("pods-%d", time.Now().UnixNano())
	var served []string
	for n := 1; n <= 6; n++ {
		p := []corev1.Pod{a, b}[(n-1)%2]
		r, code, err := postTurn(ctx, via[p.Name], "", session, fmt.Sprintf("hello, turn %d", n))
		if err != nil || code != http.StatusOK || r.Turn != n {
			t.Fatalf("turn %d on %s: %d %+v %v", n, p.Name, code, r, err)
		}
		served = append(served, fmt.Sprintf("%d@%s", r.Turn, p.Name))
	}
	t.Logf("session %s alternating between pods: %v", session, served)

	// Turn 7 on pod a, then pod a is killed outright (no grace): turn 7 was
	// answered, so it is in the store, and pod b continues with turn 8.
	r, code, err := postTurn(ctx, via[a.Name], "", session, "remember turn seven")
	if err != nil || code != http.StatusOK || r.Turn != 7 {
		t.Fatalf("turn 7 on %s: %d %+v %v", a.Name, code, r, err)
	}
	if err := c.Kube.CoreV1().Pods(sousNS).Delete(ctx, a.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	r, code, err = postTurn(ctx, via[b.Name], "", session, "what came before?")
	if err != nil || code != http.StatusOK || r.Turn != 8 {
		t.Fatalf("turn 8 on %s after killing %s: %d %+v %v", b.Name, a.Name, code, r, err)
	}
	t.Logf("turn 7 on %s, pod killed (grace 0); turn 8 on %s: turn %d", a.Name, b.Name, r.Turn)
	r, code, err = postTurn(ctx, "http://"+c.Ingress, d.host, session, "and through the route")
	if err != nil || code != http.StatusOK || r.Turn != 9 {
		t.Fatalf("turn 9 through Traefik: %d %+v %v", code, r, err)
	}
	doc, err := redisSession(ctx, c, session)
	if err != nil {
		t.Fatal(err)
	}
	var stored struct {
		Turn    int `json:"turn"`
		History []struct {
			N    int    `json:"n"`
			Text string `json:"text"`
		} `json:"history"`
	}
	if err := json.Unmarshal([]byte(doc), &stored); err != nil {
		t.Fatalf("Redis sous||%s: %v: %.300s", session, err, doc)
	}
	found := false
	for _, h := range stored.History {
		found = found || (h.N == 7 && h.Text == "remember turn seven")
	}
	if stored.Turn != 9 || !found {
		t.Fatalf("Redis sous||%s: turn %d, history %+v", session, stored.Turn, stored.History)
	}
	t.Logf("Redis sous||%s: turn %d, %d turns in the transcript, turn 7's text among them", session, stored.Turn, len(stored.History))
}

// logRestarts logs every container of ns's pods that restarted, with why
// its last run ended: the first thing to read when answers went missing.
func logRestarts(ctx context.Context, t *testing.T, c *Cluster, ns string) {
	pods, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Log(err)
		return
	}
	for _, p := range pods.Items {
		for _, s := range p.Status.ContainerStatuses {
			if s.RestartCount > 0 {
				var why string
				if term := s.LastTerminationState.Terminated; term != nil {
					why = fmt.Sprintf("%s exit %d at %s", term.Reason, term.ExitCode, term.FinishedAt.Format(time.TimeOnly))
				}
				t.Logf("pod %s container %s restarted %d times: %s", p.Name, s.Name, s.RestartCount, why)
			}
		}
	}
}

// latestReady returns the Service's latest ready revision, once the
// revision carries the given min-scale.
func latestReady(ctx context.Context, c *Cluster, ns string, minScale int) (string, error) {
	ksvc, err := c.Get(ctx, ksvcGVR, ns, "sous")
	if err != nil {
		return "", err
	}
	name, _, _ := unstructured.NestedString(ksvc.Object, "status", "latestReadyRevisionName")
	created, _, _ := unstructured.NestedString(ksvc.Object, "status", "latestCreatedRevisionName")
	if name == "" || name != created {
		return "", fmt.Errorf("latest created %q, latest ready %q", created, name)
	}
	rev, err := c.Get(ctx, revGVR, ns, name)
	if err != nil {
		return "", err
	}
	if rev.GetAnnotations()["autoscaling.knative.dev/min-scale"] != strconv.Itoa(minScale) {
		return "", fmt.Errorf("revision %s has min-scale %q", name, rev.GetAnnotations()["autoscaling.knative.dev/min-scale"])
	}
	return name, nil
}

// 4. Eventing: turns sent to the Broker reach sous through the shipped
// Trigger; the replies go back into the Broker and a second Trigger brings
// them to a recording sink. N sent, N replies, none doubled — also when
// sous answers 503 to some and the Broker retries them.
func TestSousEventing(t *testing.T) {
	d := sous(t)
	ctx := context.Background()
	t.Run("steady", func(t *testing.T) {
		sent := sendToBroker(t, d.c, sousNS, 30, 5)
		checkReplies(t, d.c, sousNS, sent)
	})
	t.Run("retried", func(t *testing.T) {
		// The same manifests with a ring of 2 and batches of 1: a burst of
		// events fills the ring at once and sous answers 503 to the rest.
		err := d.deployVariant(ctx, retryNS, OverlayOptions{Image: os.Getenv("SOUS_E2E_IMAGE"),
			Env: map[string]string{"SOUS_QUEUE": "2", "SOUS_MAX_BATCH": "1"}}, true,
			map[string]string{"autoscaling.knative.dev/max-scale": "1"})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.c.WaitReady(ctx, ksvcGVR, retryNS, "sous", 5*time.Minute); err != nil {
			t.Fatal(err)
		}
		var all []string
		rejected := 0.0
		for attempt := 1; attempt <= 3 && rejected == 0; attempt++ {
			all = append(all, sendToBroker(t, d.c, retryNS, 60, 60)...)
			waitReplies(t, d.c, retryNS, all)
			rejected = sousMetric(ctx, t, d.c, retryNS, "sous", `sous_rejected_total{reason="queue_full"`)
		}
		if rejected == 0 {
			t.Fatalf("premise unmet: sous answered no 503 (queue_full) to %d events in bursts", len(all))
		}
		t.Logf("sous rejected %v deliveries with 503 (queue_full); the Broker retried them", rejected)
		checkReplies(t, d.c, retryNS, all)
	})
}

// sendToBroker posts n turn events (over the given number of sessions) to
// the namespace's default Broker at once, and returns their ids.
func sendToBroker(t *testing.T, c *Cluster, ns string, n, sessions int) []string {
	t.Helper()
	ctx := context.Background()
	for _, name := range []string{"sous-turns", "sous-replies"} {
		if err := c.WaitReady(ctx, triggerGVR, ns, name, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitReady(ctx, brokerGVR, ns, "default", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	svc, err := c.Kube.CoreV1().Services("knative-eventing").Get(ctx, "broker-ingress", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://%s/%s/default", svc.Spec.ClusterIP, ns)
	nonce := time.Now().UnixNano()
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		ids[i] = fmt.Sprintf("ev-%d-%d", nonce, i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"text":"hello there"}`))
			req.Header = http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {ids[i]}, "Ce-Source": {"/e2e"},
				"Ce-Type": {"ai.sous.turn"}, "Ce-Subject": {fmt.Sprintf("ev-%d-s%d", nonce, i%sessions)},
				"Content-Type": {"application/json"}}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				errs <- fmt.Errorf("broker ingress answered %d for %s", resp.StatusCode, ids[i])
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("sent %d ai.sous.turn events over %d sessions to broker %s/default", n, sessions, ns)
	return ids
}

// waitReplies waits until the reply sink has logged a reply to each id.
func waitReplies(t *testing.T, c *Cluster, ns string, ids []string) map[string]int {
	t.Helper()
	ctx := context.Background()
	var seen map[string]int
	err := WaitFor(ctx, "replies at the sink", 3*time.Minute, func(ctx context.Context) (bool, string) {
		var err error
		if seen, err = sinkEvents(ctx, c, ns, "sous-replies"); err != nil {
			return false, err.Error()
		}
		missing := 0
		for _, id := range ids {
			if seen[id+"/reply"] == 0 {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("%d of %d replies missing", missing, len(ids))
	})
	if err != nil {
		t.Fatal(err)
	}
	return seen
}

// checkReplies asserts one reply per event, none doubled (after a grace
// period for late duplicates), and nothing in the dead-letter sink.
func checkReplies(t *testing.T, c *Cluster, ns string, ids []string) {
	t.Helper()
	waitReplies(t, c, ns, ids)
	time.Sleep(5 * time.Second)
	ctx := context.Background()
	seen, err := sinkEvents(ctx, c, ns, "sous-replies")
	if err != nil {
		t.Fatal(err)
	}
	dead, err := sinkEvents(ctx, c, ns, "sous-dead-letters")
	if err != nil {
		t.Fatal(err)
	}
	doubled, lost := 0, 0
	for _, id := range ids {
		if seen[id+"/reply"] > 1 {
			doubled++
		}
		if dead[id] > 0 {
			lost++
		}
	}
	if doubled > 0 || lost > 0 {
		t.Fatalf("%d events: %d replies doubled, %d in the dead-letter sink", len(ids), doubled, lost)
	}
	t.Logf("%d events sent, %d replies at the sink (each once), %d dead letters", len(ids), len(ids), lost)
}

// sousMetric sums a counter over the pods of the Knative Service ksvc in
// ns, read from each pod's /metrics (series whose line starts with prefix).
func sousMetric(ctx context.Context, t *testing.T, c *Cluster, ns, ksvc, prefix string) float64 {
	t.Helper()
	pods, err := c.Pods(ctx, ns, "serving.knative.dev/service="+ksvc)
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, p := range pods {
		if p.Status.PodIP == "" {
			continue
		}
		resp, err := http.Get("http://" + p.Status.PodIP + ":8080/metrics")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, prefix) {
				f := strings.Fields(line)
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				sum += v
			}
		}
		resp.Body.Close()
	}
	return sum
}

// 5. Dapr: service invocation from another Dapr-enabled pod reaches /turn,
// and a publish to the pub/sub component's topic runs a turn.
func TestSousDapr(t *testing.T) {
	d := sous(t)
	ctx := context.Background()
	c := d.c
	hello, err := recordingSink(c, "x")
	if err != nil {
		t.Fatal(err)
	}
	objs, _ := decodeAll(hello)
	containers, _, _ := unstructured.NestedSlice(objs[0].Object, "spec", "template", "spec", "containers")
	image, _, _ := unstructured.NestedString(containers[0].(map[string]any), "image")
	t.Cleanup(func() {
		c.Kube.CoreV1().Pods(sousNS).Delete(context.Background(), "dapr-caller", metav1.DeleteOptions{})
	})
	daprPod(t, c, sousNS, "dapr-caller", "caller", image)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	addr, err := c.PortForward(fctx, sousNS, "dapr-caller", 3500)
	if err != nil {
		t.Fatal(err)
	}
	// Dapr resolves app id sous to the headless Service sous-dapr, which
	// Dapr's operator points at one revision's pods; it must hold a ready
	// pod (see config-gc in tools/cluster/addons.sh).
	err = WaitFor(ctx, "sous-dapr with a ready address", 2*time.Minute, func(ctx context.Context) (bool, string) {
		l, err := c.Kube.DiscoveryV1().EndpointSlices(sousNS).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=sous-dapr"})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, sl := range l.Items {
			for _, e := range sl.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready && e.TargetRef != nil {
					return true, ""
				}
				seen = append(seen, fmt.Sprint(e.Addresses))
			}
		}
		return false, fmt.Sprintf("endpoints %v, none ready", seen)
	})
	if err != nil {
		t.Fatal(err)
	}
	session := fmt.Sprintf("invoke-%d", time.Now().UnixNano())
	for n := 1; n <= 2; n++ {
		r, code, err := postTurn(ctx, "http://"+addr+"/v1.0/invoke/sous/method", "", session, "hello there")
		if err != nil || code != http.StatusOK || r.Turn != n {
			t.Fatalf("invoke sous /turn from caller's daprd: %d %+v %v", code, r, err)
		}
		t.Logf("Dapr service invocation caller → sous /turn: %d, session %s turn %d, output %s", code, r.Session, r.Turn, r.Output)
	}

	// Publish through a sous pod's own sidecar (the pub/sub component is
	// scoped to sous): daprd delivers it to /events.
	pods, err := sousPods(ctx, c, sousNS)
	if err != nil || len(pods) == 0 {
		t.Fatalf("sous pods: %v", err)
	}
	paddr, err := c.PortForward(fctx, sousNS, pods[0].Name, 3500)
	if err != nil {
		t.Fatal(err)
	}
	pub := fmt.Sprintf("pub-%d", time.Now().UnixNano())
	resp, err := http.Post("http://"+paddr+"/v1.0/publish/pubsub/turns", "application/json",
		strings.NewReader(`{"session":"`+pub+`","text":"thanks a lot"}`))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("publish to pubsub/turns: %v %v", resp, err)
	}
	resp.Body.Close()
	var doc string
	err = WaitFor(ctx, "the published turn in Redis", time.Minute, func(ctx context.Context) (bool, string) {
		doc, _ = redisSession(ctx, c, pub)
		return strings.Contains(doc, `"turn":1`), doc
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("published {session %s} to pubsub/turns: Redis sous||%s = %.160s…", pub, pub, doc)
}

// 6a. Scale from zero: the first request to a Service at zero pods (the
// same manifests with min-scale 0) waits for a pod, its sidecar and the
// model, and is answered.
func TestSousColdStart(t *testing.T) {
	d := sous(t)
	ctx := context.Background()
	c := d.c
	if err := c.WaitReady(ctx, ksvcGVR, coldNS, "sous", 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	ksvc, _ := c.Get(ctx, ksvcGVR, coldNS, "sous")
	u, _, _ := unstructured.NestedString(ksvc.Object, "status", "url")
	start := time.Now()
	err := WaitFor(ctx, "the min-scale 0 Service at zero pods", 6*time.Minute, func(ctx context.Context) (bool, string) {
		pods, err := c.Pods(ctx, coldNS, "serving.knative.dev/service=sous")
		if err != nil {
			return false, err.Error()
		}
		return len(pods) == 0, fmt.Sprintf("%d pods", len(pods))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s at zero pods (waited %s)", u, time.Since(start).Round(time.Second))
	start = time.Now()
	r, code, err := postTurn(ctx, "http://"+c.Ingress, strings.TrimPrefix(u, "http://"), fmt.Sprintf("cold-%d", time.Now().UnixNano()), "hello there")
	took := time.Since(start)
	if err != nil || code != http.StatusOK || r.Turn != 1 {
		t.Fatalf("first request from zero: %d %+v %v", code, r, err)
	}
	coldStart = took
	t.Logf("first request from zero: %d, turn %d, %s in %s", code, r.Turn, r.Output, took.Round(time.Millisecond))
	pods, _ := c.Pods(ctx, coldNS, "serving.knative.dev/service=sous")
	for _, p := range pods {
		t.Logf("its pod %s: created %s before the answer", p.Name, time.Since(p.CreationTimestamp.Time).Round(time.Millisecond))
	}
}

var coldStart time.Duration

// 6b. Autoscaling: a load ramp through Traefik, from half the measured
// one-pod saturation to three times it, then a trickle while the KPA scales
// back to the minimum. Every answer is a 200 or a 503 with Retry-After.
// Writes docs/autoscaling.json and docs/autoscaling.svg.
func TestSousAutoscaling(t *testing.T) {
	d := sous(t)
	ctx := context.Background()
	c := d.c
	var rev string
	err := WaitFor(ctx, "one ready pod of the min-scale 1 revision", 5*time.Minute, func(ctx context.Context) (bool, string) {
		var err error
		if rev, err = latestReady(ctx, c, sousNS, 1); err != nil {
			return false, err.Error()
		}
		pods, err := c.Pods(ctx, sousNS, "serving.knative.dev/service=sous")
		if err != nil {
			return false, err.Error()
		}
		return len(pods) == 1 && podReady(pods[0]), fmt.Sprintf("revision %s, %d pods of the service", rev, len(pods))
	})
	if err != nil {
		t.Fatal(err)
	}

	// One pod's saturation: a closed loop of 32 callers (below the KPA's
	// target of 44.8 in flight, so the pod stays alone) for 10 s.
	sat := vegeta.NewAttacker(vegeta.Workers(32), vegeta.MaxWorkers(32), vegeta.KeepAlive(true), vegeta.Timeout(30*time.Second))
	var m vegeta.Metrics
	for r := range sat.Attack(turnTargeter(c.Ingress, d.host, fmt.Sprintf("sat-%d", time.Now().Unix()), 256), vegeta.Rate{}, 10*time.Second, "saturation") {
		m.Add(r)
	}
	m.Close()
	if m.Success < 0.99 {
		t.Fatalf("saturation run: success %.3f, codes %v, errors %v", m.Success, m.StatusCodes, m.Errors)
	}
	s := m.Throughput
	t.Logf("one pod saturates at %.0f turns/s (32 callers, p50 %s, p99 %s)", s, m.Latencies.P50, m.Latencies.P99)

	ramp := []step{{s / 2, 20 * time.Second}, {s, 20 * time.Second}, {2 * s, 40 * time.Second}, {3 * s, 40 * time.Second}}
	var rampEnd time.Duration
	for _, st := range ramp {
		rampEnd += st.For
	}
	trickle := math.Max(5, s/20)
	pacer := &stepPacer{steps: append(append([]step(nil), ramp...), step{trickle, 8 * time.Minute})}
	atk := vegeta.NewAttacker(vegeta.Workers(16), vegeta.MaxWorkers(400), vegeta.KeepAlive(true), vegeta.Timeout(60*time.Second))
	smp := &sampler{c: c, ns: sousNS, rev: rev, desired: map[int]int{}, ready: map[int]int{}, inFlight: map[int]map[string]int{}, podReady: map[string]float64{}}
	start := time.Now()
	sctx, stopSampling := context.WithCancel(ctx)
	go smp.run(sctx, start)
	var results []vegeta.Result
	var samples []string
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r := range atk.Attack(turnTargeter(c.Ingress, d.host, fmt.Sprintf("ramp-%d", time.Now().Unix()), 1000), pacer, 0, "ramp") {
			if r.Code != http.StatusOK && r.Code != http.StatusServiceUnavailable && len(samples) < 5 {
				samples = append(samples, fmt.Sprintf("t=%.1fs %d %v %q %s", r.Timestamp.Sub(start).Seconds(), r.Code, r.Headers, r.Body, r.Error))
			}
			r.Body = nil
			mu.Lock()
			results = append(results, *r)
			mu.Unlock()
		}
	}()
	// After the ramp: wait for the KPA to come back to one ready pod, then
	// 10 s more of trickle to see the drain finish.
	time.Sleep(rampEnd)
	t.Logf("ramp over after %s; trickle of %.0f turns/s while the KPA scales down", rampEnd, trickle)
	err = WaitFor(ctx, "scale back to the minimum", 7*time.Minute, func(ctx context.Context) (bool, string) {
		pods, err := c.Pods(ctx, sousNS, "serving.knative.dev/revision="+rev)
		if err != nil {
			return false, err.Error()
		}
		return len(pods) == 1, fmt.Sprintf("%d pods", len(pods))
	})
	time.Sleep(10 * time.Second)
	atk.Stop()
	<-done
	stopSampling()
	elapsed := int(time.Since(start).Seconds())
	if err != nil {
		t.Error(err)
	}

	tl := &Timeline{Machine: machine(), Command: "make e2e", SaturationRPS: s, Ramp: append(ramp, step{trickle, time.Duration(elapsed)*time.Second - rampEnd}),
		Codes: map[string]int{}, RetryAfterOn503: true, ColdStartMs: float64(coldStart.Milliseconds()), Samples: samples}
	tl.Seconds = smp.timeline(start, results, elapsed)
	for _, r := range results {
		key := strconv.Itoa(int(r.Code))
		if r.Code == 0 {
			key = "error: " + r.Error
		}
		tl.Codes[key]++
		if r.Code == http.StatusServiceUnavailable && r.Headers.Get("Retry-After") == "" {
			tl.RetryAfterOn503 = false
		}
	}
	tl.ScaleUpS, tl.ScaleDownS = -1, -1
	for _, sec := range tl.Seconds {
		tl.PeakPods = max(tl.PeakPods, sec.ReadyPods)
		if tl.ScaleUpS < 0 && sec.ReadyPods >= 3 {
			tl.ScaleUpS = float64(sec.T)
		}
	}
	for _, sec := range tl.Seconds {
		if time.Duration(sec.T)*time.Second >= rampEnd && sec.ReadyPods == 1 && tl.ScaleDownS < 0 {
			tl.ScaleDownS = float64(sec.T) - rampEnd.Seconds()
		}
	}
	for _, ms := range smp.podReady {
		tl.NewPodReadyMs = append(tl.NewPodReadyMs, ms)
	}
	sort.Float64s(tl.NewPodReadyMs)
	docs := filepath.Join(c.Root, "docs")
	if err := writeJSON(filepath.Join(docs, "autoscaling.json"), tl); err != nil {
		t.Fatal(err)
	}
	if err := plotTimeline(filepath.Join(docs, "autoscaling.svg"), tl); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d requests over %d s; answers by status %v; peak %d ready pods; ≥3 ready %.0f s after the load began; back to 1 pod %.0f s after the ramp ended; start-to-ready of the pods seen (ms): %v",
		len(results), elapsed, tl.Codes, tl.PeakPods, tl.ScaleUpS, tl.ScaleDownS, tl.NewPodReadyMs)
	if tl.PeakPods < 3 {
		t.Errorf("the KPA reached %d ready pods, want at least 3", tl.PeakPods)
	}
	for code, n := range tl.Codes {
		if code != "200" && code != "503" {
			t.Errorf("%d answers %s: want only 200, or 503 with Retry-After", n, code)
			logRestarts(ctx, t, c, sousNS)
		}
	}
	if !tl.RetryAfterOn503 {
		t.Errorf("a 503 came without Retry-After")
	}
}

// machine names this machine for the timeline.
func machine() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	model := regexp.MustCompile(`model name\s*:\s*(.*)`).FindStringSubmatch(string(b))
	name := "unknown CPU"
	if model != nil {
		name = model[1]
	}
	return fmt.Sprintf("%d vCPU %s, single-node cluster from make cluster", runtime.NumCPU(), name)
}

// 7. Metrics (run after the load of 6): Prometheus scrapes sous and
// queue-proxy, and every query of the shipped Grafana dashboard returns
// data.
func TestSousMetrics(t *testing.T) {
	d := sous(t)
	b, err := os.ReadFile(filepath.Join(d.c.Root, "knative", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	exprs := regexp.MustCompile(`"expr":\s*"((?:[^"\\]|\\.)*)"`).FindAllStringSubmatch(string(b), -1)
	if len(exprs) == 0 {
		t.Fatal("no queries in the dashboard")
	}
	targets := map[string]int{}
	err = WaitFor(context.Background(), "Prometheus scraping sous and queue-proxy", time.Minute, func(context.Context) (bool, string) {
		up, err := d.prom.query(`up{namespace="` + sousNS + `"}`)
		if err != nil {
			return false, err.Error()
		}
		clear(targets)
		for _, s := range up {
			if s.Value[1] == "1" {
				targets[s.Metric["container"]]++
			}
		}
		return targets["sous"] > 0 && targets["queue-proxy"] > 0, fmt.Sprintf("targets up by container: %v", targets)
	})
	if err != nil {
		t.Fatal(err)
	}
	qp, err := d.prom.query(`count by (__name__) ({container="queue-proxy"})`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range qp {
		names = append(names, s.Metric["__name__"])
	}
	t.Logf("Prometheus targets up: %v; queue-proxy series: %d names (%.200s)", targets, len(names), strings.Join(names, " "))
	for _, m := range exprs {
		var q string
		json.Unmarshal([]byte(`"`+m[1]+`"`), &q)
		q = strings.ReplaceAll(q, "$__rate_interval", "5m")
		res, err := d.prom.query(q)
		if err != nil {
			t.Errorf("%s: %v", q, err)
			continue
		}
		if len(res) == 0 {
			t.Errorf("dashboard query returns no data: %s", q)
			continue
		}
		t.Logf("%d series: %s (first: %v = %v)", len(res), q, res[0].Metric, res[0].Value[1])
	}
}
