package tokenizer

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// The language models' tokenizer files the parity corpus is held to:
// fetched by make llm-tokenizers into .cache (never committed).
var llmTokenizers = []string{"qwen3", "llama3", "gpt4o", "llama2", "gemma3"}

// Small files made for what the language models' files do not use
// (testdata/mktokenizers.js), committed: two Unigram files (no reachable
// package has a real one) and a GPT-2-style byte-level one (ByteLevel's own
// regex and prefix space, trim_offsets, a Sequence post-processor).
var builtTokenizers = []string{"unigram-metaspace", "unigram-fallback", "bytelevel-gpt2"}

// loadAny loads a fetched language model's file or a committed one.
func loadAny(t testing.TB, name string) *Tokenizer {
	t.Helper()
	if slices.Contains(llmTokenizers, name) {
		return loadLLM(t, name)
	}
	tok, err := Load(filepath.Join("testdata", "tokenizers", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type llmExpected struct {
	encoded
	Decoded         string `json:"decoded"`
	DecodedSpecial  string `json:"decoded_special"`
	DecodedTail     string `json:"decoded_tail"`
	DecodedReversed string `json:"decoded_reversed"`
}

// llmPath is a fetched file's path, from the repository's root.
func llmPath(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = up
	}
	p := filepath.Join(dir, ".cache", "llm-tokenizers", name, "tokenizer.json")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is missing: run make llm-tokenizers (%v)", p, err)
	}
	return p
}

var (
	llmMu     sync.Mutex // guards llmLoaded
	llmLoaded = map[string]*Tokenizer{}
)

// loadLLM loads a fetched file once per test binary (Gemma 3's is 33 MB).
func loadLLM(t testing.TB, name string) *Tokenizer {
	t.Helper()
	llmMu.Lock()
	defer llmMu.Unlock()
	if tok := llmLoaded[name]; tok != nil {
		return tok
	}
	tok, err := Load(llmPath(t, name))
	if err != nil {
		t.Fatal(err)
	}
	llmLoaded[name] = tok
	return tok
}

// Every corpus line encodes to the ids, type ids and offsets Hugging Face's
// library gives (testdata/llmgen.js), and decodes to its text with special
// tokens skipped and kept.
func TestParityLLM(t *testing.T) {
	corpus := readLines[corpusLine](t, "testdata/llm_corpus.jsonl")
	for _, name := range append(llmTokenizers, builtTokenizers...) {
		t.Run(name, func(t *testing.T) {
			tok := loadAny(t, name)
			want := readLines[llmExpected](t, filepath.Join("testdata", "expected", name+".jsonl"))
			if len(want) != len(corpus) {
				t.Fatalf("%d expected lines for %d corpus lines: regenerate with make tokenizer-parity", len(want), len(corpus))
			}
			checks, same := 0, 0
			for i, in := range corpus {
				got, err := tok.EncodeWith(in.Text, in.Pair, nil)
				checks += 3 // encoding, two decodings; two more below
				if err == nil && equal(got, want[i].encoded) {
					same++
				} else {
					t.Errorf("line %d %q/%v:\n got  %v %v %v (%v)\n want %v %v %v", i+1, in.Text, in.Pair,
						got.IDs, got.TypeIDs, got.Offsets, err, want[i].IDs, want[i].TypeIDs, want[i].Offsets)
				}
				if d := tok.DecodeWith(want[i].IDs, true); d == want[i].Decoded {
					same++
				} else {
					t.Errorf("line %d: decode skipping special tokens:\n got  %q\n want %q", i+1, d, want[i].Decoded)
				}
				if d := tok.DecodeWith(want[i].IDs, false); d == want[i].DecodedSpecial {
					same++
				} else {
					t.Errorf("line %d: decode keeping special tokens:\n got  %q\n want %q", i+1, d, want[i].DecodedSpecial)
				}
				ids := want[i].IDs
				rev := slices.Clone(ids)
				slices.Reverse(rev)
				for _, c := range []struct {
					what string
					ids  []int64
					want string
				}{{"less the first id", ids[min(1, len(ids)):], want[i].DecodedTail}, {"reversed", rev, want[i].DecodedReversed}} {
					checks++
					if d := tok.DecodeWith(c.ids, false); d == c.want {
						same++
					} else {
						t.Errorf("line %d: decode %s:\n got  %q\n want %q", i+1, c.what, d, c.want)
					}
				}
			}
			t.Logf("%s: %d of %d encodings and decodings equal to Hugging Face tokenizers 0.23.2 (%d corpus lines)", name, same, checks, len(corpus))
		})
	}
}

// TestLoadTimes reports each file's load time and the heap the loaded
// tokenizer holds; make tokenizer-parity prints them beside the library's.
func TestLoadTimes(t *testing.T) {
	for _, name := range slices.Concat(parityTokenizers, builtTokenizers, llmTokenizers) {
		p := filepath.Join("testdata", "tokenizers", name+".json")
		if slices.Contains(llmTokenizers, name) {
			p = llmPath(t, name)
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		tok, err := Load(p)
		took := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		t.Logf("LOAD %s go_load_ms %.0f heap_held_mb %.1f vocab %d", name, float64(took.Microseconds())/1000, float64(held)/(1<<20), tok.VocabSize())
		runtime.KeepAlive(tok)
	}
}

// Feeding each corpus line's ids to a StreamDecoder one by one gives pieces
// that are whole UTF-8 and join to the whole decode, special tokens skipped
// and kept.
func TestStreamDecode(t *testing.T) {
	corpus := readLines[corpusLine](t, "testdata/llm_corpus.jsonl")
	for _, name := range slices.Concat(llmTokenizers, builtTokenizers, parityTokenizers) {
		t.Run(name, func(t *testing.T) {
			tok := loadAny(t, name)
			for i, in := range corpus {
				e, _ := tok.EncodeWith(in.Text, in.Pair, nil)
				// The ids of the line, then the same with the first one
				// dropped (a stream that starts inside a character).
				for _, ids := range [][]int64{e.IDs, e.IDs[min(1, len(e.IDs)):]} {
					for _, skip := range []bool{true, false} {
						s := tok.NewStreamDecoder(skip)
						var got strings.Builder
						for _, id := range ids {
							p := s.Next(id)
							if !utf8.ValidString(p) {
								t.Fatalf("line %d: piece %q is not whole UTF-8", i+1, p)
							}
							got.WriteString(p)
						}
						got.WriteString(s.Flush())
						want := tok.DecodeWith(ids, skip)
						if strings.ContainsRune(want, utf8.RuneError) && tok.hasDecoder(decByteFallback) {
							// ByteFallback turns a whole run of byte tokens
							// with an invalid byte in it into U+FFFDs; a stream
							// shows each character once complete and does not
							// take it back.
							continue
						}
						if got.String() != want {
							t.Errorf("line %d (skip special %v): stream %q, decode %q", i+1, skip, got.String(), want)
						}
					}
				}
			}
		})
	}
}

// Encoding from many goroutines at once (the word cache shared) gives what
// encoding one at a time does.
func TestConcurrentEncode(t *testing.T) {
	tok := loadLLM(t, "qwen3")
	corpus := readLines[corpusLine](t, "testdata/llm_corpus.jsonl")
	want := make([][]int64, len(corpus))
	for i, in := range corpus {
		want[i] = tok.IDs(in.Text)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 4*len(corpus))
	for g := range 4 {
		wg.Go(func() {
			for k := range corpus {
				i := (k + g*7) % len(corpus)
				if got := tok.IDs(corpus[i].Text); !slices.Equal(got, want[i]) {
					errs <- fmt.Sprintf("line %d: %v, alone %v", i+1, got, want[i])
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// A token's bytes, joined over a line's ids, are the line's decoding (with
// special tokens kept); Llama 2's decoder also strips the text's first
// space, which is no token's.
func TestTokenBytes(t *testing.T) {
	corpus := readLines[corpusLine](t, "testdata/llm_corpus.jsonl")
	for _, name := range []string{"qwen3", "llama3", "gpt4o", "llama2", "gemma3", "bytelevel-gpt2"} {
		t.Run(name, func(t *testing.T) {
			tok := loadAny(t, name)
			for i, in := range corpus {
				ids := tok.IDs(in.Text)
				var b []byte
				for _, id := range ids {
					b = append(b, tok.TokenBytes(id)...)
				}
				if !utf8.Valid(b) {
					t.Fatalf("line %d: the tokens' bytes are not UTF-8", i+1)
				}
				got := string(b)
				if name == "llama2" {
					got = strings.TrimPrefix(got, " ")
				}
				if want := tok.DecodeWith(ids, false); got != want {
					t.Errorf("line %d: tokens' bytes %q, decode %q", i+1, got, want)
				}
			}
			if tok.TokenBytes(-1) != nil || tok.TokenBytes(int64(tok.VocabSize())) != nil {
				t.Error("an id outside the vocabulary has bytes")
			}
		})
	}
}
