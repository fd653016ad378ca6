package tasks_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sous-ai/sous/function/tasks"
)

// A graph that is not a decoder needs nothing; junk is refused as not
// ONNX. (Derived decoders are held to transformers.js in testmodels.)
func TestLastPositionGraphLeavesOthers(t *testing.T) {
	dir := t.TempDir()
	g := tinyGraph(10)
	writeFiles(t, dir, map[string]string{"model.onnx": string(g.Marshal()), "junk.onnx": "\xff\xff\xff"})
	if data, why, err := tasks.LastPositionGraph(filepath.Join(dir, "model.onnx")); data != nil || why != "" || err != nil {
		t.Errorf("not a decoder: %d bytes, %q, %v; want nothing", len(data), why, err)
	}
	if _, _, err := tasks.LastPositionGraph(filepath.Join(dir, "junk.onnx")); !errors.Is(err, tasks.ErrNotONNX) {
		t.Errorf("junk: %v, want ErrNotONNX", err)
	}
}

// Whatever the file, deriving never panics, and what it derives parses.
func FuzzLastPositionGraph(f *testing.F) {
	g := tinyGraph(3)
	f.Add(g.Marshal())
	f.Add([]byte("\x3a\x02\x0a\x00"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "m.onnx")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		data, _, err := tasks.LastPositionGraph(p)
		if err != nil || data == nil {
			return
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := tasks.ExternalData(p); err != nil {
			t.Fatalf("the derived graph does not parse: %v", err)
		}
	})
}
