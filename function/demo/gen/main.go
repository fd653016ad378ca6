// Command gen writes sous's bundled models, byte for byte reproducibly:
// intent.onnx (the demo model, fitted to function/demo/data) and bench.onnx
// (a compute-heavy MLP). `make model` runs it.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/sous-ai/sous/function/demo"
)

func main() {
	out := flag.String("out", "function/demo", "folder to write intent.onnx and bench.onnx to")
	hidden := flag.Int("bench-hidden", 1024, "width of the bench model's hidden layers")
	depth := flag.Int("bench-depth", 8, "number of hidden x hidden layers of the bench model")
	flag.Parse()

	intent, err := demo.BuildIntent(demo.Data)
	if err != nil {
		log.Fatalf("gen: intent model: %v", err)
	}
	for name, data := range map[string][]byte{
		"intent.onnx": intent,
		"bench.onnx":  demo.BuildBench(*hidden, *depth),
	} {
		path := filepath.Join(*out, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			log.Fatalf("gen: %v", err)
		}
		fmt.Printf("wrote %s (%d bytes)\n", path, len(data))
	}
}
