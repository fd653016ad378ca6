package state_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/sous-ai/sous/function/state"
	"github.com/sous-ai/sous/internal/daprtest"
)

func daprStore(tb testing.TB) *state.Dapr {
	tb.Helper()
	redis := daprtest.StartRedis(tb)
	return daprStoreOn(tb, daprtest.DaprdParams{AppID: "sous", AppPort: daprtest.FreePort(tb), Redis: redis}, "")
}

// daprStoreOn starts daprd as p says and connects a store to it.
func daprStoreOn(tb testing.TB, p daprtest.DaprdParams, batch state.BatchWrite) *state.Dapr {
	tb.Helper()
	d := daprtest.StartDaprd(tb, p)
	s, err := state.NewDapr(state.DaprParams{Address: "127.0.0.1:" + strconv.Itoa(d.GRPCPort), Store: "statestore", Batch: batch})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Wait(ctx); err != nil {
		tb.Fatal(err)
	}
	return s
}

// Against a real daprd and redis-server: first-write ETags, conflicts
// told apart from outages, and the TTL.
func TestDaprStore(t *testing.T) {
	storeContract(t, daprStore(t))
}

// On a Redis Cluster (3 masters, 3 replicas) the same contract holds, with
// bulk saves and with transactions (which Dapr 1.18 splits by hash slot).
func TestDaprStoreOnRedisCluster(t *testing.T) {
	c := daprtest.StartRedisCluster(t, daprtest.ClusterParams{})
	for _, batch := range []state.BatchWrite{state.BatchBulk, state.BatchTransaction} {
		t.Run(string(batch), func(t *testing.T) {
			c.FlushAll()
			storeContract(t, daprStoreOn(t, daprtest.DaprdParams{AppID: "sous", AppPort: daprtest.FreePort(t), Cluster: c}, batch))
		})
	}
}

func storeContract(t *testing.T, s *state.Dapr) {
	ctx := context.Background()
	const ttl = time.Hour

	got, etag, err := s.Get(ctx, "d1")
	if err != nil || etag != "" || got.Turn != 0 {
		t.Fatalf("Get of a new session = (%+v, %q, %v)", got, etag, err)
	}
	want := state.Session{Version: 1, Turn: 1, State: []float32{0.5, 0.25}}
	if err := s.Save(ctx, "d1", want, "", ttl); err != nil {
		t.Fatal(err)
	}
	// A second first write of the same session loses (daprd reports it as
	// an internal error; the store re-reads and says conflict).
	if err := s.Save(ctx, "d1", want, "", ttl); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("second first-write: %v, want ErrConflict", err)
	}
	got, etag, err = s.Get(ctx, "d1")
	if err != nil || etag == "" || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Get = (%+v, %q, %v), want %+v", got, etag, err, want)
	}
	next := want
	next.Turn = 2
	if err := s.Save(ctx, "d1", next, etag, ttl); err != nil {
		t.Fatalf("save with the etag read: %v", err)
	}
	if err := s.Save(ctx, "d1", next, etag, ttl); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("save with a stale etag: %v, want ErrConflict", err)
	}

	// Bulk: a batch of existing sessions goes in one transaction, each
	// checked against its ETag; a stale one fails alone.
	_, e1, _ := s.Get(ctx, "d1")
	if err := s.Save(ctx, "d2", want, "", ttl); err != nil {
		t.Fatal(err)
	}
	_, e2, _ := s.Get(ctx, "d2")
	errs := s.SaveBulk(ctx, []state.SaveItem{{ID: "d1", Session: next, ETag: e1}, {ID: "d2", Session: next, ETag: e2}, {ID: "d3", Session: want}}, ttl)
	if fmt.Sprint(errs) != "[<nil> <nil> <nil>]" {
		t.Fatalf("SaveBulk with fresh ETags: %v", errs)
	}
	_, e1b, _ := s.Get(ctx, "d1")
	errs = s.SaveBulk(ctx, []state.SaveItem{{ID: "d1", Session: next, ETag: e1b}, {ID: "d2", Session: next, ETag: e2}, {ID: "d3", Session: want}}, ttl)
	if !errors.Is(errs[1], state.ErrConflict) || !errors.Is(errs[2], state.ErrConflict) {
		t.Fatalf("SaveBulk with a stale ETag and a second first write: %v, want conflicts for d2 and d3", errs)
	}
	// Redis does not roll a transaction back: d1 is written, though it may
	// be reported as a conflict (the pipeline's request key makes the redo
	// answer from the transcript).
	if errs[0] != nil && !errors.Is(errs[0], state.ErrConflict) {
		t.Fatalf("SaveBulk d1: %v", errs[0])
	}
	if got, _, _ := s.Get(ctx, "d1"); got.Turn != next.Turn {
		t.Fatalf("d1 after SaveBulk: %+v, want it written", got)
	}
	entries, err := s.GetBulk(ctx, []string{"d1", "d2", "nope"})
	if err != nil || len(entries) != 3 || entries[0].ETag == "" || entries[2].ETag != "" || entries[2].Session.Turn != 0 {
		t.Fatalf("GetBulk = %+v, %v", entries, err)
	}

	if err := s.Save(ctx, "short", want, "", time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2100 * time.Millisecond)
	if got, etag, _ := s.Get(ctx, "short"); etag != "" || got.Turn != 0 {
		t.Errorf("session with a 1s TTL still there after 2.1s: %+v", got)
	}
}

// BenchmarkDaprRoundTrip measures one turn's state cost through daprd: a
// Get and an ETag-conditional Save of a session of 16 turns.
func BenchmarkDaprRoundTrip(b *testing.B) {
	s := daprStore(b)
	benchRoundTrip(b, s)
}

// BenchmarkMemoryRoundTrip is the same against the embedded store.
func BenchmarkMemoryRoundTrip(b *testing.B) {
	benchRoundTrip(b, state.NewMemory(nil))
}

func benchRoundTrip(b *testing.B, s state.Store) {
	ctx := context.Background()
	sess := state.Session{Version: 1, State: make([]float32, 7)}
	for i := range 16 {
		sess.History = append(sess.History, state.Turn{N: i + 1, Text: "hello there", Output: []byte(`{"intent":"greeting"}`)})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		key := "bench" + strconv.Itoa(i%64)
		i++
		got, etag, err := s.Get(ctx, key)
		if err != nil {
			b.Fatal(err)
		}
		sess.Turn = got.Turn + 1
		if err := s.Save(ctx, key, sess, etag, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}

// With a master killed, and until daprd's Redis client has learnt who
// took over, a bulk call that touches its shard takes the whole deadline;
// with bulk saves the store then asks session by session, so that the
// other shards' sessions are read and saved as usual.
func TestDaprStoreOnRedisClusterWithADeadMaster(t *testing.T) {
	c := daprtest.StartRedisCluster(t, daprtest.ClusterParams{})
	s := daprStoreOn(t, daprtest.DaprdParams{AppID: "sous", AppPort: daprtest.FreePort(t), Cluster: c}, state.BatchBulk)
	ctx := context.Background()
	var ids []string
	for i := range 12 {
		ids = append(ids, "dead"+strconv.Itoa(i))
		if err := s.Save(ctx, ids[i], state.Session{Version: 1, Turn: 1}, "", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	c.Masters()[0].Stop()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	entries, err := s.GetBulk(cctx, ids)
	if err != nil {
		t.Fatalf("GetBulk with a master dead: %v", err)
	}
	var saves []state.SaveItem
	failed := 0
	for i, e := range entries {
		switch {
		case e.Err == nil:
			saves = append(saves, state.SaveItem{ID: ids[i], Session: state.Session{Version: 1, Turn: 2,
				History: []state.Turn{{N: 2, Event: "e" + ids[i], Output: []byte(`{}`)}}}, ETag: e.ETag})
		case errors.Is(e.Err, state.ErrUnavailable):
			failed++
		default:
			t.Errorf("%s: %v", ids[i], e.Err)
		}
	}
	t.Logf("with a master dead: %d of %d sessions read, %d unavailable", len(saves), len(ids), failed)
	// 12 keys over 3 shards: some on the dead one is all but certain, and
	// the others must not fail with it.
	if len(saves) == 0 || len(saves) == len(ids) {
		t.Fatalf("%d of %d sessions read with a master dead, want those of the live shards", len(saves), len(ids))
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for i, err := range s.SaveBulk(sctx, saves, time.Hour) {
		if err != nil {
			t.Errorf("save %s on a live shard: %v", saves[i].ID, err)
		}
	}
}
