// Command gen writes the test model directories (make model):
// gen -tokenizer TOKENIZER.json -out testdata/models.
package main

import (
	"flag"
	"log"
	"os"

	"github.com/sous-ai/sous/function/tasks/testmodels"
)

func main() {
	tok := flag.String("tokenizer", "function/tokenizer/testdata/tokenizers/all-minilm-l6-v2.json", "a BERT-family tokenizer.json")
	out := flag.String("out", "testdata/models", "where to write <task>/")
	qwen3 := flag.String("qwen3", ".cache/llm-tokenizers/qwen3", "Qwen3's tokenizer.json and tokenizer_config.json (make llm-tokenizers), for llm/")
	flag.Parse()
	b, err := os.ReadFile(*tok)
	if err != nil {
		log.Fatal(err)
	}
	if err := testmodels.Write(*out, b); err != nil {
		log.Fatal(err)
	}
	if err := testmodels.Decoder(*out, b); err != nil {
		log.Fatal(err)
	}
	if err := testmodels.DecoderGQA(*out, b); err != nil {
		log.Fatal(err)
	}
	if err := testmodels.LLM(*out, *qwen3); err != nil {
		log.Fatal(err)
	}
}
