package function

import (
	"strings"
	"testing"
)

// Placement moves generation turns, whose KV a pod keeps: asked of a model
// that does not generate, start-up fails and says why.
func TestPlacementNeedsADecoder(t *testing.T) {
	cfg := testConfig(t)
	cfg.Placement = "actors"
	f, err := New(cfg, WithLogger(quietLogger()))
	if err == nil {
		f.engine.Close()
		t.Fatal("SOUS_PLACEMENT=actors on the demo intent model started")
	}
	if !strings.Contains(err.Error(), "SOUS_PLACEMENT=actors") || !strings.Contains(err.Error(), "does not generate") {
		t.Errorf("start-up error %q does not say why", err)
	}
}
