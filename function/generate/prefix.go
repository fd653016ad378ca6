package generate

import (
	"container/list"
	"sync"
)

// prefixCache keeps recent sessions' KV, one entry a session, least
// recently used first out, bounded by bytes. An entry holds the token ids
// a finished generation fed the model (its prompt and all but its last
// token) with their keys and values, and the transcript version its
// exchange will be saved as. The next turn of the session, built from
// that version, starts from the entry: only the tokens past the longest
// common prefix are prefilled. A version mismatch (another pod took a
// turn, or the save failed) drops the entry, and the prompt is prefilled
// whole.
type prefixCache struct {
	mu    sync.Mutex
	max   int64
	used  int64
	lru   *list.List // of *prefix, most recent at the front
	by    map[string]*list.Element
	stats CacheStats
}

// CacheStats are the prefix cache's counters.
type CacheStats struct {
	Hits, Misses int64 // lookups that found a usable entry, and those that did not
	Bytes        int64 // held now
	Entries      int
}

type prefix struct {
	session, version string
	ids              []int64
	kv               [][2][]byte // per layer: key, value, [heads, len(ids), hd]
	bytes            int64
}

func newPrefixCache(max int64) *prefixCache {
	return &prefixCache{max: max, lru: list.New(), by: map[string]*list.Element{}}
}

// take removes session's entry and returns it if it was built for version.
func (c *prefixCache) take(session, version string) *prefix {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.by[session]
	if !ok {
		c.stats.Misses++
		return nil
	}
	p := c.remove(el)
	if p.version != version {
		c.stats.Misses++
		return nil
	}
	c.stats.Hits++
	return p
}

// put makes p session's entry, evicting the least recently used entries
// until the cache is within its bound; an entry larger than the bound is
// not kept.
func (c *prefixCache) put(p *prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.by[p.session]; ok {
		c.remove(el)
	}
	if p.bytes > c.max {
		return
	}
	for c.used+p.bytes > c.max {
		c.remove(c.lru.Back())
	}
	c.by[p.session] = c.lru.PushFront(p)
	c.used += p.bytes
}

func (c *prefixCache) remove(el *list.Element) *prefix {
	p := c.lru.Remove(el).(*prefix)
	delete(c.by, p.session)
	c.used -= p.bytes
	return p
}

func (c *prefixCache) snapshot() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Bytes, s.Entries = c.used, c.lru.Len()
	return s
}

// commonPrefix is the number of leading tokens a and b share.
func commonPrefix(a, b []int64) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// lookup finds s's session in the prefix cache: how many of the prompt's
// tokens it already holds KV for (at least one token is left to prefill,
// for its logits), and that KV, per layer [heads, past, hd].
func (e *Engine) lookup(s *seq) (int, [][2][]byte) {
	if e.cache == nil || s.p.Session == "" {
		return 0, nil
	}
	c := e.cache.take(s.p.Session, s.p.Prev)
	if c == nil {
		return 0, nil
	}
	past := min(commonPrefix(c.ids, s.prompt), len(s.prompt)-1)
	if past <= 0 {
		return 0, nil
	}
	s.cached = past
	if past == len(c.ids) {
		return past, c.kv
	}
	sh := e.shape
	kv := make([][2][]byte, sh.layers)
	for l := range kv {
		for k := range 2 {
			kv[l][k] = headsPrefix(c.kv[l][k], sh.heads, int64(len(c.ids)), int64(past), sh.row())
		}
	}
	return past, kv
}

// remember keeps a finished sequence's KV in the prefix cache, for the
// session's next turn: the tokens fed (the prompt and all generated but
// the last) and their keys and values.
func (e *Engine) remember(s *seq) {
	if e.cache == nil || s.p.Session == "" || s.err != nil || s.length < len(s.prompt) {
		return
	}
	n := len(s.prompt)
	ids := append(s.prompt[:n:n], s.out[:s.length-n]...)
	sh := e.shape
	kv := e.kv.kvOf(s)
	if len(kv) != sh.layers {
		return
	}
	e.cache.put(&prefix{session: s.p.Session, version: s.p.Next, ids: ids, kv: kv,
		bytes: int64(sh.layers) * 2 * sh.heads * int64(s.length) * sh.row()})
}

// CacheStats reports the prefix cache's counters (zero without one).
func (e *Engine) CacheStats() CacheStats {
	if e.cache == nil {
		return CacheStats{}
	}
	return e.cache.snapshot()
}
