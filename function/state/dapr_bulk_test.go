package state

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	json "github.com/goccy/go-json"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeSidecar is the part of the Dapr client the store uses, over a map,
// with writes and reads that fail for chosen keys as a dead shard's would.
// A bulk save fails as daprd's does: every item is tried, and the call
// has one error if any item failed.
type fakeSidecar struct {
	dapr.Client
	mu                  sync.Mutex // guards the fields below
	data                map[string]fakeValue
	failWrite, failRead map[string]bool
	hang                map[string]bool // calls on these keys answer when ctx ends
	txErr               error           // what ExecuteStateTransaction answers
	bulkSaves, bulkGets int
	txs, gets           int
	consistency         []dapr.StateConsistency // of each item saved
}

type fakeValue struct {
	etag  int
	value []byte
}

// hung blocks until ctx ends if any of keys hangs, and says whether it did.
func (f *fakeSidecar) hung(ctx context.Context, keys ...string) bool {
	for _, k := range keys {
		if f.hang[k] {
			<-ctx.Done()
			return true
		}
	}
	return false
}

func (f *fakeSidecar) SaveBulkState(ctx context.Context, _ string, items ...*dapr.SetStateItem) (failed error) {
	f.mu.Lock()
	f.bulkSaves++
	var keys []string
	defer func() {
		f.mu.Unlock()
		if f.hung(ctx, keys...) {
			failed = status.Error(codes.DeadlineExceeded, "context deadline exceeded")
		}
	}()
	for _, it := range items {
		keys = append(keys, it.Key)
		if f.hang[it.Key] {
			continue
		}
		f.consistency = append(f.consistency, it.Options.Consistency)
		cur, exists := f.data[it.Key]
		switch {
		case f.failWrite[it.Key]:
			failed = errors.Join(failed, status.Error(codes.Internal, "connection refused"))
		case it.Etag == nil && exists, it.Etag != nil && (!exists || it.Etag.Value != strconv.Itoa(cur.etag)):
			failed = errors.Join(failed, status.Error(codes.Aborted, "etag mismatch"))
		default:
			f.data[it.Key] = fakeValue{cur.etag + 1, it.Value}
		}
	}
	return failed
}

func (f *fakeSidecar) GetBulkState(ctx context.Context, _ string, keys []string, _ map[string]string, _ int32) ([]*dapr.BulkStateItem, error) {
	f.mu.Lock()
	f.bulkGets++
	f.mu.Unlock()
	if f.hung(ctx, keys...) {
		return nil, status.Error(codes.DeadlineExceeded, "context deadline exceeded")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*dapr.BulkStateItem
	for _, k := range keys {
		it := &dapr.BulkStateItem{Key: k}
		if f.failRead[k] {
			it.Error = "connection refused"
		} else if v, ok := f.data[k]; ok {
			it.Value, it.Etag = v.value, strconv.Itoa(v.etag)
		}
		out = append(out, it)
	}
	return out, nil
}

func (f *fakeSidecar) GetState(ctx context.Context, _, key string, _ map[string]string) (*dapr.StateItem, error) {
	f.mu.Lock()
	f.gets++
	f.mu.Unlock()
	if f.hung(ctx, key) {
		return nil, status.Error(codes.DeadlineExceeded, "context deadline exceeded")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failRead[key] {
		return nil, status.Error(codes.Internal, "connection refused")
	}
	v := f.data[key]
	return &dapr.StateItem{Key: key, Value: v.value, Etag: strconv.Itoa(v.etag)}, nil
}

func (f *fakeSidecar) ExecuteStateTransaction(context.Context, string, map[string]string, []*dapr.StateOperation) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.txs++
	return f.txErr
}

// session is turn n of a conversation, its last entry keyed by event.
func session(n int, event string) Session {
	return Session{Version: 1, Turn: n, History: []Turn{{N: n, Event: event, Output: json.RawMessage(`{}`)}}}
}

// In bulk mode a batch is one bulk save; when it fails, one bulk read
// tells each item's fate.
func TestSaveBulkClassifiesEachItem(t *testing.T) {
	enc := func(s Session) []byte { b, _ := json.Marshal(s); return b }
	f := &fakeSidecar{
		data: map[string]fakeValue{
			"ok":    {3, enc(session(3, "a"))},
			"stale": {5, enc(session(5, "other pod"))},
			"taken": {1, enc(session(1, "other pod"))},
			"flaky": {2, enc(session(2, "b"))},
			"down":  {2, enc(session(2, "c"))},
		},
		failWrite: map[string]bool{"flaky": true, "down": true},
		failRead:  map[string]bool{"down": true},
	}
	d, err := newDapr(f, DaprParams{Store: "statestore", Batch: BatchBulk})
	if err != nil {
		t.Fatal(err)
	}
	items := []SaveItem{
		{ID: "ok", Session: session(4, "ok#4"), ETag: "3"},
		{ID: "stale", Session: session(5, "stale#5"), ETag: "4"},
		{ID: "taken", Session: session(1, "taken#1")}, // a first write that lost
		{ID: "new", Session: session(1, "new#1")},
		{ID: "flaky", Session: session(3, "flaky#3"), ETag: "2"},
		{ID: "down", Session: session(3, "down#3"), ETag: "2"},
	}
	errs := d.SaveBulk(context.Background(), items, time.Hour)
	for i, want := range []error{nil, ErrConflict, ErrConflict, nil, ErrUnavailable, ErrUnavailable} {
		if got := errs[i]; (want == nil) != (got == nil) || want != nil && !errors.Is(got, want) {
			t.Errorf("%s: %v, want %v", items[i].ID, got, want)
		}
	}
	if f.bulkSaves != 1 || f.bulkGets != 1 || f.txs != 0 || f.gets != 0 {
		t.Errorf("calls: %d bulk saves, %d bulk reads, %d transactions, %d reads; want one bulk save and one bulk read",
			f.bulkSaves, f.bulkGets, f.txs, f.gets)
	}

	for _, c := range f.consistency {
		if c != dapr.StateConsistencyEventual {
			t.Fatalf("an item saved with consistency %v, want eventual (no WAIT)", c)
		}
	}

	// A batch that all goes in is one call.
	f.bulkSaves, f.bulkGets = 0, 0
	errs = d.SaveBulk(context.Background(), []SaveItem{{ID: "ok", Session: session(5, "ok#5"), ETag: "4"}, {ID: "new2", Session: session(1, "new2#1")}}, time.Hour)
	if errs[0] != nil || errs[1] != nil || f.bulkSaves != 1 || f.bulkGets != 0 {
		t.Errorf("a clean batch: %v with %d bulk saves, %d bulk reads; want no errors, one save, no read", errs, f.bulkSaves, f.bulkGets)
	}
}

// A shard that does not answer holds up a bulk call until its deadline:
// with bulk saves the store then asks session by session, so that only
// that shard's sessions fail.
func TestBulkSurvivesAShardThatHangs(t *testing.T) {
	enc := func(s Session) []byte { b, _ := json.Marshal(s); return b }
	f := &fakeSidecar{
		data: map[string]fakeValue{"a": {1, enc(session(1, "a"))}, "b": {1, enc(session(1, "b"))}, "dead": {1, enc(session(1, "d"))}},
		hang: map[string]bool{"dead": true},
	}
	d, err := newDapr(f, DaprParams{Store: "statestore", Batch: BatchBulk})
	if err != nil {
		t.Fatal(err)
	}
	// The bulk read gets half the deadline; the reads one by one give up
	// the hung one soon after the others answer, not at the deadline.
	const deadline = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	start := time.Now()
	entries, err := d.GetBulk(ctx, []string{"a", "dead", "b"})
	took := time.Since(start)
	cancel()
	if err != nil || entries[0].Err != nil || entries[2].Err != nil || entries[0].Session.Turn != 1 || !errors.Is(entries[1].Err, ErrUnavailable) {
		t.Fatalf("GetBulk with a hung shard: %+v, %v; want a and b read, dead unavailable", entries, err)
	}
	if took > deadline*3/4 {
		t.Errorf("GetBulk with a hung shard took %s of its %s: it waited for the hung read", took, deadline)
	}
	ctx, cancel = context.WithTimeout(context.Background(), deadline)
	errs := d.SaveBulk(ctx, []SaveItem{
		{ID: "a", Session: session(2, "a#2"), ETag: entries[0].ETag},
		{ID: "dead", Session: session(2, "dead#2"), ETag: entries[1].ETag},
		{ID: "b", Session: session(2, "b#2"), ETag: entries[2].ETag},
	}, time.Hour)
	cancel()
	if errs[0] != nil || errs[2] != nil || !errors.Is(errs[1], ErrUnavailable) {
		t.Fatalf("SaveBulk with a hung shard: %v; want a and b saved, dead unavailable", errs)
	}
}

// A transaction refused for spanning hash slots switches the store to bulk
// saves, for this batch and every later one.
func TestSaveTransactionSwitchesOnCrossSlot(t *testing.T) {
	f := &fakeSidecar{
		data:  map[string]fakeValue{"a": {1, nil}, "b": {1, nil}},
		txErr: status.Error(codes.Internal, "error executing transaction: CROSSSLOT Keys in request don't hash to the same slot"),
	}
	d, err := newDapr(f, DaprParams{Store: "statestore"})
	if err != nil {
		t.Fatal(err)
	}
	for n := 2; n <= 3; n++ {
		items := []SaveItem{{ID: "a", Session: session(n, "a"), ETag: strconv.Itoa(n - 1)}, {ID: "b", Session: session(n, "b"), ETag: strconv.Itoa(n - 1)}}
		if errs := d.SaveBulk(context.Background(), items, time.Hour); errs[0] != nil || errs[1] != nil {
			t.Fatalf("batch %d: %v", n, errs)
		}
	}
	if f.txs != 1 || f.bulkSaves != 2 {
		t.Errorf("%d transactions, %d bulk saves; want the one refused transaction, then bulk saves", f.txs, f.bulkSaves)
	}
	for _, c := range f.consistency {
		if c != dapr.StateConsistencyEventual {
			t.Errorf("after the switch, an item saved with consistency %v, want eventual", c)
		}
	}
	if _, err := newDapr(f, DaprParams{Batch: "pipeline"}); err == nil {
		t.Error(`Batch "pipeline" accepted`)
	}
}
