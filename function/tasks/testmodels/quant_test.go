package testmodels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The 4-bit form dequantizes, as MatMulNBits reads it ((q - 8) · scale,
// nibbles low first, [n, blocks, 16]), to within half a step of the
// weight; the block's largest magnitude exactly.
func TestQuantize4(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const k, n = 80, 3 // a partial last block
	w := make([]float32, k*n)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	packed, scales := quantize4(w, k, n)
	blocks := (k + 31) / 32
	for c := range n {
		for i := range k {
			blk := i / 32
			b := packed[(c*blocks+blk)*16+(i%32)/2]
			q := int(b>>(4*(i%2))) & 15
			scale := scales[c*blocks+blk]
			got := float32(q-8) * scale
			if d := math.Abs(float64(got - w[i*n+c])); d > math.Abs(float64(scale))/2+1e-6 {
				t.Fatalf("w[%d,%d] = %g dequantizes to %g (scale %g)", i, c, w[i*n+c], got, scale)
			}
		}
	}
}

func TestQuantize8(t *testing.T) {
	w := []float32{-1.27, 0.5, 0.0049, 1, -0.005}
	q, scale := quantize8(w)
	if scale != float32(1.27)/127 {
		t.Errorf("scale %g, want %g", scale, float32(1.27)/127)
	}
	for i, x := range w {
		if d := math.Abs(float64(float32(q[i])*scale - x)); d > float64(scale)/2+1e-7 {
			t.Errorf("w[%d] = %g quantizes to %d", i, x, q[i])
		}
	}
	if q[0] != -127 || q[3] != 100 {
		t.Errorf("q = %v, want -127 first and 100 for 1.0", q)
	}
}
