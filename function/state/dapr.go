package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	// encoding/json's API and output, at 2.3x its speed on a session
	// (BenchmarkSessionCodec); encoding/json was 44% of sous's CPU in Dapr mode.
	json "github.com/goccy/go-json"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// DaprParams configures a Dapr store.
type DaprParams struct {
	// Address is the sidecar's gRPC endpoint, host:port.
	Address string
	// Store is the state component's name.
	Store string
	// Token, when set, is sent as dapr-api-token (DAPR_API_TOKEN).
	Token string
	// Batch is how SaveBulk writes a batch; "" is BatchTransaction.
	Batch BatchWrite
}

// BatchWrite is how SaveBulk writes the sessions of one batch.
type BatchWrite string

const (
	// BatchTransaction writes a batch's existing sessions in one state
	// transaction (one MULTI/EXEC on a single Redis) and each new session
	// alone. The store switches to BatchBulk for good the first time a
	// transaction is refused as spanning hash slots (CROSSSLOT): a Redis
	// Cluster's.
	BatchTransaction BatchWrite = "transaction"
	// BatchBulk writes all of a batch's sessions with one bulk save, each
	// conditional on its own ETag (a new one on being absent), for a
	// Redis Cluster: the sessions of a batch hash to different slots,
	// which daprd saves in parallel, where Dapr 1.18 splits a transaction
	// into one MULTI/EXEC per slot, run one after another (and a newer
	// Redis client refuses it). Its saves ask for eventual consistency:
	// on a cluster, Dapr's strong consistency is a WAIT sent to a random
	// master on any pooled connection, which checks nothing about the
	// write, and once a master has lost its replica it holds every save
	// routed there for its full second. Its bulk reads and saves get half
	// the time left, then the store asks session by session (readAll), so
	// that a dead shard fails only its own sessions.
	BatchBulk BatchWrite = "bulk"
)

// Dapr keeps sessions through the Dapr state API over gRPC (dapr/go-sdk),
// backed by whatever state component the sidecar has (Redis in sous's
// deployment). Saves use first-write concurrency with the ETag read and
// strong consistency (eventual with BatchBulk), and set ttlInSeconds, so
// every turn renews the session's expiry.
type Dapr struct {
	client dapr.Client
	store  string
	bulk   atomic.Bool // BatchBulk: SaveBulk writes with one bulk save, saves ask for eventual consistency
}

// NewDapr connects to the sidecar lazily: the connection is made, and
// remade after a sidecar restart, by gRPC itself. Call Wait to block until
// the sidecar answers.
func NewDapr(p DaprParams) (*Dapr, error) {
	conn, err := grpc.NewClient(p.Address, grpc.WithTransportCredentials(insecure.NewCredentials()),
		// The sidecar is on loopback: after a restart, retry the
		// connection at least every 500ms, not on gRPC's default backoff,
		// which grows to minutes and keeps turns failing long after the
		// sidecar is back.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		return nil, fmt.Errorf("state: dapr sidecar at %s: %w", p.Address, err)
	}
	c := dapr.NewClientWithConnection(conn)
	if p.Token != "" {
		c.WithAuthToken(p.Token)
	}
	return newDapr(c, p)
}

func newDapr(c dapr.Client, p DaprParams) (*Dapr, error) {
	d := &Dapr{client: c, store: p.Store}
	switch p.Batch {
	case "", BatchTransaction:
	case BatchBulk:
		d.bulk.Store(true)
	default:
		return nil, fmt.Errorf("state: batch write %q: want %q or %q", p.Batch, BatchTransaction, BatchBulk)
	}
	return d, nil
}

// Wait blocks until the sidecar answers a state read, or ctx ends.
func (d *Dapr) Wait(ctx context.Context) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := d.client.GetState(cctx, d.store, "sous-startup-probe", nil)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("state: dapr sidecar not answering: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Close closes the connection to the sidecar.
func (d *Dapr) Close() { d.client.Close() }

// Get implements Store.
func (d *Dapr) Get(ctx context.Context, id string) (Session, string, error) {
	item, err := d.client.GetState(ctx, d.store, id, nil)
	if err != nil {
		return Session{}, "", d.failed(ctx, "get", id, err)
	}
	if item == nil || len(item.Value) == 0 {
		return Session{}, "", nil
	}
	var s Session
	if err := json.Unmarshal(item.Value, &s); err != nil {
		return Session{}, "", fmt.Errorf("state: decode %q: %w", id, err)
	}
	return s, item.Etag, nil
}

// GetBulk implements Store with one GetBulkState call; with BatchBulk, as
// readAll does.
func (d *Dapr) GetBulk(ctx context.Context, ids []string) ([]Entry, error) {
	if d.bulk.Load() {
		return d.readAll(ctx, ids)
	}
	return d.getBulk(ctx, ids)
}

// readAll reads ids with one bulk read given half the time ctx has left;
// when that fails, with one read per session (readEach) in the time left.
// A bulk read answers only once its slowest session has, so on a Redis
// Cluster one shard that does not answer (a dead master, until its replica
// has taken over and daprd has learnt so) would fail every session of the
// batch, not just its own.
func (d *Dapr) readAll(ctx context.Context, ids []string) ([]Entry, error) {
	bctx, cancel := halfTime(ctx)
	out, err := d.getBulk(bctx, ids)
	cancel()
	if err == nil || ctx.Err() != nil || len(ids) == 1 {
		return out, err
	}
	return d.readEach(ctx, ids), nil
}

// straggle is the least readEach waits for a read once another has
// answered.
const straggle = 100 * time.Millisecond

// readEach reads ids one call each, concurrently. Reads still out when
// none has answered for a while (straggle, or as long as the answers so
// far took, if longer) are given up as unavailable instead of waited for
// to the deadline: they are a shard that does not answer, and the batch's
// other turns go ahead without them.
func (d *Dapr) readEach(ctx context.Context, ids []string) []Entry {
	out := make([]Entry, len(ids))
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan int, len(ids))
	for i, id := range ids {
		go func() {
			out[i].Session, out[i].ETag, out[i].Err = d.Get(rctx, id)
			done <- i
		}()
	}
	start := time.Now()
	var quiet <-chan time.Time // armed by the first answer
	for n := 0; n < len(ids); {
		select {
		case <-done:
			n++
			quiet = time.After(max(straggle, time.Since(start)))
		case <-quiet:
			// Cancelled, the reads still out end at once, unavailable.
			cancel()
			quiet = nil
		}
	}
	return out
}

// halfTime is ctx with half the time to its deadline; ctx itself when it
// has none.
func halfTime(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, time.Until(deadline)/2)
}

func (d *Dapr) getBulk(ctx context.Context, ids []string) ([]Entry, error) {
	items, err := d.client.GetBulkState(ctx, d.store, ids, nil, int32(min(len(ids), 16)))
	if err != nil {
		return nil, d.failed(ctx, "get bulk", strings.Join(ids[:min(3, len(ids))], ","), err)
	}
	byKey := make(map[string]*dapr.BulkStateItem, len(items))
	for _, it := range items {
		byKey[it.Key] = it
	}
	out := make([]Entry, len(ids))
	for i, id := range ids {
		it := byKey[id]
		switch {
		case it == nil:
			out[i].Err = fmt.Errorf("state: get %q: %w: missing from the bulk answer", id, ErrUnavailable)
		case it.Error != "":
			out[i].Err = fmt.Errorf("state: get %q: %w: %s", id, ErrUnavailable, it.Error)
		case len(it.Value) > 0:
			if err := json.Unmarshal(it.Value, &out[i].Session); err != nil {
				out[i].Err = fmt.Errorf("state: decode %q: %w", id, err)
			}
			out[i].ETag = it.Etag
		}
	}
	return out, nil
}

// SaveBulk implements Store, as BatchTransaction or BatchBulk says.
func (d *Dapr) SaveBulk(ctx context.Context, items []SaveItem, ttl time.Duration) []error {
	if d.bulk.Load() {
		return d.saveBulk(ctx, items, ttl)
	}
	return d.saveTransaction(ctx, items, ttl)
}

// saveTransaction writes sessions that exist (they carry an ETag) in one
// state transaction, whose operations are each checked against their ETag;
// it costs daprd much less than a bulk save. Redis does not roll a
// transaction back, so when one operation fails the others may have been
// written: those then report ErrConflict when saved alone, and the caller
// must make its redo idempotent (the turn pipeline finds the turn in the
// transcript by its request key). A new session is saved alone: a
// transaction does not enforce "only if absent" for an operation without
// an ETag, and first-write-wins must hold for a session two pods start at
// once. If the transaction fails, each of its sessions is saved alone and
// classified as Save does; if it was refused for spanning hash slots, they
// are saved as saveBulk does, and so is every later batch.
func (d *Dapr) saveTransaction(ctx context.Context, items []SaveItem, ttl time.Duration) []error {
	errs := make([]error, len(items))
	var inTx []int
	var ops []*dapr.StateOperation
	for i, it := range items {
		if it.ETag == "" {
			errs[i] = d.Save(ctx, it.ID, it.Session, "", ttl)
			continue
		}
		si, err := d.setItem(it.ID, it.Session, it.ETag, ttl)
		if err != nil {
			errs[i] = err
			continue
		}
		inTx = append(inTx, i)
		ops = append(ops, &dapr.StateOperation{Type: dapr.StateOperationTypeUpsert, Item: si})
	}
	if len(ops) == 0 {
		return errs
	}
	err := d.client.ExecuteStateTransaction(ctx, d.store, nil, ops)
	if err == nil {
		return errs
	}
	if strings.Contains(err.Error(), "CROSSSLOT") {
		// Refused before anything was written.
		d.bulk.Store(true)
		rest := make([]SaveItem, len(inTx))
		for k, i := range inTx {
			rest[k] = items[i]
		}
		for k, err := range d.saveBulk(ctx, rest, ttl) {
			errs[inTx[k]] = err
		}
		return errs
	}
	for _, i := range inTx {
		errs[i] = d.Save(ctx, items[i].ID, items[i].Session, items[i].ETag, ttl)
	}
	return errs
}

// saveBulk writes every item with one bulk save, each conditional on its
// own ETag. daprd saves the items independently, in parallel, so some may
// be written when others fail, and it answers with one error for the
// call. One bulk read then tells each item's fate: a session now holding
// the item's last turn under the item's turn number was written by this
// save; one whose ETag moved otherwise was written by another writer
// (ErrConflict); one whose ETag did not move was not written, for the
// failure the call reports (an ETag mismatch would have moved it); one
// that cannot be read is unavailable. The bulk save has half the time ctx
// has left, the read the rest (see readAll).
func (d *Dapr) saveBulk(ctx context.Context, items []SaveItem, ttl time.Duration) []error {
	if len(items) == 1 {
		return []error{d.Save(ctx, items[0].ID, items[0].Session, items[0].ETag, ttl)}
	}
	errs := make([]error, len(items))
	var sent []int
	var ids []string
	var reqs []*dapr.SetStateItem
	for i, it := range items {
		si, err := d.setItem(it.ID, it.Session, it.ETag, ttl)
		if err != nil {
			errs[i] = err
			continue
		}
		sent, ids, reqs = append(sent, i), append(ids, it.ID), append(reqs, si)
	}
	if len(reqs) == 0 {
		return errs
	}
	// Half the time, so that a save held up by one shard leaves time to
	// learn which sessions went in.
	bctx, cancel := halfTime(ctx)
	err := d.client.SaveBulkState(bctx, d.store, reqs...)
	cancel()
	if err == nil {
		return errs
	}
	var now []Entry
	var gerr error = ctx.Err()
	if gerr == nil {
		now, gerr = d.readAll(ctx, ids)
	}
	for k, i := range sent {
		switch {
		case gerr != nil || now[k].Err != nil:
			errs[i] = d.failed(ctx, "save", ids[k], err)
		case now[k].ETag != items[i].ETag && sameLastTurn(now[k].Session, items[i].Session):
			errs[i] = nil
		case now[k].ETag != items[i].ETag:
			errs[i] = fmt.Errorf("state: save %q: %w", ids[k], ErrConflict)
		default:
			errs[i] = d.failed(ctx, "save", ids[k], err)
		}
	}
	return errs
}

// sameLastTurn reports whether stored is at want's turn with want's last
// transcript entry, as identified by its request key.
func sameLastTurn(stored, want Session) bool {
	a, b := stored.History, want.History
	return stored.Turn == want.Turn && len(a) > 0 && len(b) > 0 &&
		b[len(b)-1].Event != "" && a[len(a)-1].Event == b[len(b)-1].Event && a[len(a)-1].N == b[len(b)-1].N
}

func (d *Dapr) setItem(id string, s Session, etag string, ttl time.Duration) (*dapr.SetStateItem, error) {
	value, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("state: encode %q: %w", id, err)
	}
	item := &dapr.SetStateItem{
		Key:      id,
		Value:    value,
		Metadata: map[string]string{"ttlInSeconds": strconv.FormatInt(int64(max(1, ttl/time.Second)), 10)},
		Options: &dapr.StateOptions{
			Concurrency: dapr.StateConcurrencyFirstWrite,
			Consistency: dapr.StateConsistencyStrong,
		},
	}
	if d.bulk.Load() {
		item.Options.Consistency = dapr.StateConsistencyEventual
	}
	if etag != "" {
		item.Etag = &dapr.ETag{Value: etag}
	}
	return item, nil
}

// Save implements Store.
func (d *Dapr) Save(ctx context.Context, id string, s Session, etag string, ttl time.Duration) error {
	item, err := d.setItem(id, s, etag, ttl)
	if err != nil {
		return err
	}
	err = d.client.SaveBulkState(ctx, d.store, item)
	if err == nil {
		return nil
	}
	if status.Code(err) == codes.Aborted {
		return fmt.Errorf("state: save %q: %w", id, ErrConflict)
	}
	// daprd answers a lost first-write race with the same internal error
	// as an unreachable Redis: read again to tell which.
	if ctx.Err() == nil {
		if _, now, gerr := d.Get(ctx, id); gerr == nil && now != etag {
			return fmt.Errorf("state: save %q: %w", id, ErrConflict)
		}
	}
	return d.failed(ctx, "save", id, err)
}

func (d *Dapr) failed(ctx context.Context, op, id string, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w: %v", ctx.Err(), err)
	}
	return fmt.Errorf("state: %s %q: %w: %v", op, id, ErrUnavailable, err)
}
