// Package demo is sous's bundled model: a conversation-aware intent
// classifier over UTF-8 text, its tokenizer, its labelled data, the
// training that fits it, and the generated ONNX bytes (embedded).
//
// The model's contract:
//
//	inputs:  tokens       INT64 [batch, seq]   ids from Tokenize, 0 pads
//	         state_in     FP32  [batch, 7]     the conversation so far (zeros on turn 1)
//	outputs: probs        FP32  [batch, 6]     one probability per label, Labels order
//	         state_out    FP32  [batch, 7]     state_in for the session's next turn
//	         token_logits FP32  [batch, seq, 6] each token's contribution to the logits
//
// The state holds an exponentially decayed history of the intents seen
// (dimensions 0-5, half-life one turn) and how far the conversation has run
// (dimension 6, +0.125 a turn, capped at 1). Its learned weights let the
// conversation decide an ambiguous turn: "you too" is a greeting after
// "nice to meet you" and a goodbye after "have a nice day".
package demo

import (
	"embed"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Labels are the intents, in the order of the model's probs output.
var Labels = []string{"greeting", "question", "thanks", "complaint", "goodbye", "other"}

// Model dimensions.
const (
	// Vocab is the size of the hashed token id space; id 0 is padding.
	Vocab = 4096
	// StateSize is the length of state_in and state_out.
	StateSize = 7
	// MaxTokens bounds the tokens one text yields; the rest are dropped.
	MaxTokens = 512
	// Tokenizer names the tokenizer in the model's metadata, so that the
	// text pipeline can tell a model it can feed.
	Tokenizer = "sous-hashed-ngrams-v1"
)

// Name is the bundled model's served name.
const Name = "intent"

// ONNX is the bundled model, as written by `make model`.
//
//go:embed intent.onnx
var ONNX []byte

// Tokenize maps text to token ids in [1, Vocab): for each word (a run of
// letters and digits, lower-cased, apostrophes dropped) its hashed unigram
// and character trigrams of "<word>", and for each adjacent pair of words
// its hashed bigram. Text without words yields one padding token, so that
// every text has a sequence of length at least one. Invalid UTF-8 bytes
// separate words.
func Tokenize(text string) []int64 {
	words := Words(text)
	if len(words) == 0 {
		return []int64{0}
	}
	ids := make([]int64, 0, 8*len(words))
	add := func(kind byte, s string) bool {
		if len(ids) == MaxTokens {
			return false
		}
		h := fnv.New32a()
		h.Write([]byte{kind, ':'})
		h.Write([]byte(s))
		ids = append(ids, int64(h.Sum32()%(Vocab-1))+1)
		return true
	}
	for i, w := range words {
		if !add('w', w) {
			break
		}
		if i > 0 && !add('b', words[i-1]+" "+w) {
			break
		}
		padded := []rune("<" + w + ">")
		for j := 0; j+3 <= len(padded); j++ {
			if !add('c', string(padded[j:j+3])) {
				break
			}
		}
	}
	return ids
}

// Words splits text into lower-cased words of letters and digits.
func Words(text string) []string {
	var words []string
	var b strings.Builder
	flush := func() {
		if b.Len() > 0 {
			words = append(words, b.String())
			b.Reset()
		}
	}
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		i += size
		switch {
		case r == utf8.RuneError && size == 1:
			flush()
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(unicode.ToLower(r))
		case r == '\'' || r == '’':
			// "what's" is one word: whats
		default:
			flush()
		}
	}
	flush()
	return words
}

// ChatName is the bundled chat model's served name: SOUS_MODEL=chat
// serves it.
const ChatName = "chat"

// Chat is the bundled chat model's directory (model.onnx, tokenizer.json,
// config.json, tokenizer_config.json), fitted by tools/chatmodel to
// data/chat.txt (`make model`).
//
//go:embed chat
var Chat embed.FS

// WriteChat writes the bundled chat model's directory to a new temporary
// folder and returns its path (…/chat); the caller removes its parent.
func WriteChat() (string, error) {
	tmp, err := os.MkdirTemp("", "sous-chat-")
	if err != nil {
		return "", err
	}
	dir := filepath.Join(tmp, ChatName)
	if err := os.CopyFS(dir, mustSub(Chat, "chat")); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("bundled chat model: %w", err)
	}
	return dir, nil
}

func mustSub(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err) // dir is a constant embedded folder
	}
	return sub
}
