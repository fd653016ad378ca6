package grammar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// byteDecoder reverses GPT-2's byte-to-unicode map: the characters
// byte-level BPE vocabularies spell bytes with.
func byteDecoder() map[rune]byte {
	var bs []int
	for b := '!'; b <= '~'; b++ {
		bs = append(bs, int(b))
	}
	for b := 0xA1; b <= 0xAC; b++ {
		bs = append(bs, b)
	}
	for b := 0xAE; b <= 0xFF; b++ {
		bs = append(bs, b)
	}
	in := map[int]bool{}
	for _, b := range bs {
		in[b] = true
	}
	cs := append([]int(nil), bs...)
	n := 0
	for b := 0; b < 256; b++ {
		if !in[b] {
			bs = append(bs, b)
			cs = append(cs, 256+n)
			n++
		}
	}
	m := map[rune]byte{}
	for i, b := range bs {
		m[rune(cs[i])] = byte(b)
	}
	return m
}

type qwen struct {
	tokens [][]byte
	eos    []int
}

var (
	qwenOnce sync.Once
	qwenVal  *qwen
	qwenErr  error
)

// qwenTokens reads Qwen3's vocabulary as bytes: byte-level tokens decoded,
// added non-special tokens as their text, special ones nil.
func qwenTokens(tb testing.TB) *qwen {
	tb.Helper()
	qwenOnce.Do(func() {
		path := filepath.Join("..", "..", ".cache", "llm-tokenizers", "qwen3", "tokenizer.json")
		data, err := os.ReadFile(path)
		if err != nil {
			qwenErr = err
			return
		}
		var tj struct {
			Model struct {
				Vocab map[string]int `json:"vocab"`
			} `json:"model"`
			Added []struct {
				ID      int    `json:"id"`
				Content string `json:"content"`
				Special bool   `json:"special"`
			} `json:"added_tokens"`
		}
		if qwenErr = json.Unmarshal(data, &tj); qwenErr != nil {
			return
		}
		size := 0
		for _, id := range tj.Model.Vocab {
			size = max(size, id+1)
		}
		for _, a := range tj.Added {
			size = max(size, a.ID+1)
		}
		dec := byteDecoder()
		q := &qwen{tokens: make([][]byte, size)}
		for s, id := range tj.Model.Vocab {
			var b []byte
			for _, r := range s {
				x, ok := dec[r]
				if !ok {
					qwenErr = os.ErrInvalid
					return
				}
				b = append(b, x)
			}
			q.tokens[id] = b
		}
		for _, a := range tj.Added {
			if a.Special {
				q.tokens[a.ID] = nil
				if a.Content == "<|im_end|>" || a.Content == "<|endoftext|>" {
					q.eos = append(q.eos, a.ID)
				}
				continue
			}
			q.tokens[a.ID] = []byte(a.Content)
		}
		qwenVal = q
	})
	if qwenErr != nil {
		tb.Fatalf("Qwen3 vocabulary: %v (run make llm-tokenizers)", qwenErr)
	}
	return qwenVal
}

var (
	qwenVocabOnce sync.Once
	qwenVocabVal  *Vocab
)

func qwenVocab(tb testing.TB) *Vocab {
	tb.Helper()
	q := qwenTokens(tb)
	qwenVocabOnce.Do(func() {
		v, err := NewVocab(q.tokens, q.eos)
		if err != nil {
			panic(err)
		}
		qwenVocabVal = v
	})
	return qwenVocabVal
}

// synthVocab is every single byte, then multi-byte tokens of JSON pieces
// and text cut at random (so some split UTF-8 characters), then EOS.
func synthVocab(seed uint64) *Vocab {
	r := rand.New(rand.NewPCG(seed, 1))
	var toks [][]byte
	for b := 0; b < 256; b++ {
		toks = append(toks, []byte{byte(b)})
	}
	pieces := []string{`{"`, `":`, `",`, `"}`, `}`, `]`, `[`, `,"`, `":"`, `true`, `false`, `null`, `0`, `12`, `-`, `.5`, `e1`,
		`name`, `age`, `tags`, `id`, ` `, `\n`, `\"`, `\u00e9`, `é`, `日本`, `😀`, `ü`, `a`, `bc`, `def`, `"`, `\`, `2024-`, `01`, `T12:`, `Z`, `@`, `.com`}
	seen := map[string]bool{}
	for len(toks) < 3000 {
		var b []byte
		for k := 1 + r.IntN(3); k > 0; k-- {
			b = append(b, pieces[r.IntN(len(pieces))]...)
		}
		// Cut at random byte offsets: UTF-8 characters split across tokens.
		i, j := r.IntN(len(b)), r.IntN(len(b)+1)
		if i > j {
			i, j = j, i
		}
		if j-i < 2 || seen[string(b[i:j])] {
			continue
		}
		seen[string(b[i:j])] = true
		toks = append(toks, b[i:j])
	}
	toks = append(toks, nil, nil) // a special token, then EOS
	v, err := NewVocab(toks, []int{len(toks) - 1})
	if err != nil {
		panic(err)
	}
	return v
}

// validator compiles schema with an independent JSON Schema implementation,
// formats asserted.
func validator(tb testing.TB, schema string) *jsonschema.Schema {
	tb.Helper()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(schema))
	if err != nil {
		tb.Fatalf("schema %s: %v", schema, err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("schema.json", doc); err != nil {
		tb.Fatal(err)
	}
	s, err := c.Compile("schema.json")
	if err != nil {
		tb.Fatalf("schema %s: %v", schema, err)
	}
	return s
}

func validate(s *jsonschema.Schema, text []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(text))
	if err != nil {
		return err
	}
	return s.Validate(inst)
}

// sample picks a set bit of mask uniformly, or -1.
func sample(r *rand.Rand, mask []uint64) int {
	n := countMask(mask)
	if n == 0 {
		return -1
	}
	k := r.IntN(n)
	for w, x := range mask {
		c := bits.OnesCount64(x)
		if k >= c {
			k -= c
			continue
		}
		for ; x != 0; x &= x - 1 {
			if k == 0 {
				return w*64 + bits.TrailingZeros64(x)
			}
			k--
		}
	}
	return -1
}

// walk generates one output under the mask, at most maxSteps tokens.
// It returns the text and whether it ended (EOS or Done). With check, each
// step's mask is compared with Allowed for every token.
func walk(tb testing.TB, c *Constraint, v *Vocab, r *rand.Rand, maxSteps int, check bool) ([]byte, bool) {
	tb.Helper()
	text, ended, err := walkErr(c, v, r, maxSteps, check)
	if err != nil {
		tb.Fatal(err)
	}
	return text, ended
}

func walkErr(c *Constraint, v *Vocab, r *rand.Rand, maxSteps int, check bool) ([]byte, bool, error) {
	m := c.NewMatcher()
	mask := make([]uint64, v.MaskWords())
	var text []byte
	for step := 0; step < maxSteps; step++ {
		if m.Done() {
			return text, true, nil
		}
		m.FillMask(mask)
		if check {
			for id := 0; id < v.Size(); id++ {
				if got, want := mask[id>>6]>>(id&63)&1 == 1, m.Allowed(id); got != want {
					return nil, false, fmt.Errorf("after %q: token %d %q: mask %v, Allowed %v", text, id, v.tokens[id], got, want)
				}
			}
		}
		id := sample(r, mask)
		if id < 0 {
			return nil, false, fmt.Errorf("after %q: empty mask", text)
		}
		if err := m.Accept(id); err != nil {
			return nil, false, fmt.Errorf("after %q: Accept(%d): %w", text, id, err)
		}
		if v.isEOS[id] {
			return text, true, nil
		}
		text = append(text, v.tokens[id]...)
	}
	return text, m.Done(), nil
}
