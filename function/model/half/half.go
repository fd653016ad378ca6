// Package half converts between float32 and the 16-bit floating-point
// formats ONNX models carry: IEEE 754 binary16 (FLOAT16) and bfloat16
// (BFLOAT16), both as their raw bits. Conversions to 16 bits round to
// nearest, ties to even, as numpy's astype and ONNX Runtime's Cast do.
package half

import "math"

// FromFloat32 returns the binary16 bits nearest to f (ties to even);
// values beyond the largest finite half become infinities, NaN stays NaN.
func FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	switch {
	case exp == 0xff: // Inf or NaN
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp > 142: // 2^16 and up: overflow
		return sign | 0x7c00
	case exp >= 113: // normal half
		h := uint32(exp-112)<<10 | mant>>13
		rest := mant & 0x1fff
		if rest > 0x1000 || (rest == 0x1000 && h&1 == 1) {
			h++ // may carry into the exponent, up to infinity: correct
		}
		return sign | uint16(h)
	case exp >= 102: // subnormal half
		m := mant | 0x800000
		shift := uint32(126 - exp) // 14..24
		h := m >> shift
		rest := m & (1<<shift - 1)
		halfway := uint32(1) << (shift - 1)
		if rest > halfway || (rest == halfway && h&1 == 1) {
			h++
		}
		return sign | uint16(h)
	}
	return sign // underflow to zero
}

// ToFloat32 returns the value of binary16 bits h (exact).
func ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// subnormal: mant × 2^-24
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

// FromFloat32BF returns the bfloat16 bits nearest to f (ties to even).
func FromFloat32BF(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7f800000 == 0x7f800000 && b&0x7fffff != 0 {
		return uint16(b>>16) | 0x40 // quiet NaN
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// ToFloat32BF returns the value of bfloat16 bits h (exact).
func ToFloat32BF(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// Slice converts a float32 slice to binary16 bits.
func Slice(f []float32) []uint16 {
	out := make([]uint16, len(f))
	for i, v := range f {
		out[i] = FromFloat32(v)
	}
	return out
}

// Float32s converts binary16 bits to float32s.
func Float32s(h []uint16) []float32 {
	out := make([]float32, len(h))
	for i, v := range h {
		out[i] = ToFloat32(v)
	}
	return out
}
