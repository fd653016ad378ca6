package half

import (
	"math"
	"testing"
)

func TestFromFloat32(t *testing.T) {
	for _, tc := range []struct {
		f    float32
		want uint16
	}{
		{0, 0}, {float32(math.Copysign(0, -1)), 0x8000}, {1, 0x3c00}, {-2, 0xc000}, {0.5, 0x3800},
		{65504, 0x7bff}, {65520, 0x7c00}, {1e6, 0x7c00}, {float32(math.Inf(-1)), 0xfc00},
		{6.103515625e-05, 0x0400},          // smallest normal
		{5.960464477539063e-08, 0x0001},    // smallest subnormal
		{2.9802322387695312e-08, 0x0000},   // half of it: ties to even, zero
		{4.470348358154297e-08, 0x0001},    // 0.75 of it: rounds up
		{1 + 1.0/2048, 0x3c00},             // tie, even stays
		{1 + 3.0/2048, 0x3c02},             // tie, odd rounds up
		{1 + 1.0/2048 + 1.0/65536, 0x3c01}, // above the tie
		{0.1, 0x2e66},
	} {
		if got := FromFloat32(tc.f); got != tc.want {
			t.Errorf("FromFloat32(%g) = %#04x, want %#04x", tc.f, got, tc.want)
		}
	}
	if got := FromFloat32(float32(math.NaN())); got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
		t.Errorf("FromFloat32(NaN) = %#04x, not a NaN", got)
	}
}

func TestRoundTrip(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := ToFloat32(uint16(h))
		if math.IsNaN(float64(f)) {
			continue
		}
		if got := FromFloat32(f); got != uint16(h) {
			t.Fatalf("FromFloat32(ToFloat32(%#04x) = %g) = %#04x", h, f, got)
		}
		if got := ToFloat32BF(uint16(h)); FromFloat32BF(got) != uint16(h) && !math.IsNaN(float64(got)) {
			t.Fatalf("bfloat16 %#04x does not round-trip", h)
		}
	}
}

func TestBFloat16(t *testing.T) {
	for _, tc := range []struct {
		f    float32
		want uint16
	}{{1, 0x3f80}, {-2, 0xc000}, {1 + 1.0/256, 0x3f80}, {1 + 3.0/256, 0x3f82}, {3.4e38, 0x7f80}} {
		if got := FromFloat32BF(tc.f); got != tc.want {
			t.Errorf("FromFloat32BF(%g) = %#04x, want %#04x", tc.f, got, tc.want)
		}
	}
}
