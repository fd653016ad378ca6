package main

import (
	"os"
	"testing"
)

// docs/architecture.svg is what this program draws: `make docs` after a
// change to the boxes.
func TestSVGUpToDate(t *testing.T) {
	b, err := os.ReadFile("../architecture.svg")
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != render() {
		t.Error("docs/architecture.svg is stale: run make docs")
	}
}
