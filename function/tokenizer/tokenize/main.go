// Command tokenize encodes JSON lines {"text": "...", "pair": "..."} from
// stdin with a tokenizer.json, writing one line {"ids", "type_ids",
// "offsets"} per input: special tokens added, no padding, truncation as the
// file says, offsets in characters as Hugging Face's library reports them.
// A line {"ids": [...]} is decoded instead, to {"text": "..."} (special
// tokens kept), so that both directions can be checked from outside.
// make tokenize TOKENIZER=path/to/tokenizer.json runs it.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"github.com/sous-ai/sous/function/tokenizer"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: tokenize TOKENIZER.json < lines.jsonl")
		os.Exit(2)
	}
	tok, err := tokenizer.Load(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokenize:", err)
		os.Exit(1)
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<26)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for n := 1; in.Scan(); n++ {
		var line struct {
			Text *string `json:"text"`
			Pair *string `json:"pair"`
			IDs  []int64 `json:"ids"`
		}
		err := json.Unmarshal(in.Bytes(), &line)
		if err == nil && line.Text == nil && line.IDs != nil {
			enc.Encode(map[string]any{"text": tok.DecodeWith(line.IDs, false)})
			continue
		}
		if err != nil || line.Text == nil {
			out.Flush()
			fmt.Fprintf(os.Stderr, "tokenize: line %d: want {\"text\": \"...\", \"pair\": \"...\"} or {\"ids\": [...]} (%v)\n", n, err)
			os.Exit(1)
		}
		e, err := tok.EncodeWith(*line.Text, line.Pair, tok.Truncation)
		if err != nil {
			out.Flush()
			fmt.Fprintf(os.Stderr, "tokenize: line %d: %v\n", n, err)
			os.Exit(1)
		}
		enc.Encode(map[string]any{"ids": e.IDs, "type_ids": e.TypeIDs, "offsets": e.Offsets})
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "tokenize:", err)
		os.Exit(1)
	}
}
