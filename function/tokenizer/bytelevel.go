package tokenizer

import "unicode/utf8"

// GPT-2's byte-to-character table: the printable bytes stand for
// themselves, the others for U+0100 on, in order.
var (
	byteChar [256]rune
	charByte = map[rune]byte{}
)

func init() {
	n := rune(0)
	for b := range 256 {
		if b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE {
			byteChar[b] = rune(b)
		} else {
			byteChar[b] = 256 + n
			n++
		}
		charByte[byteChar[b]] = byte(b)
	}
}

// byteLevelDecodeToken is what the ByteLevel decoder makes of one token:
// its characters' bytes if all are in the table, else its own UTF-8.
func byteLevelDecodeToken(tok string) []byte {
	return appendByteLevel(make([]byte, 0, len(tok)), []byte(tok))
}

// appendByteLevel appends byteLevelDecodeToken(tok) to dst.
func appendByteLevel(dst, tok []byte) []byte {
	n := len(dst)
	for i := 0; i < len(tok); {
		r, w := utf8.DecodeRune(tok[i:])
		b, ok := charToByte(r)
		if !ok {
			return append(dst[:n], tok...)
		}
		dst = append(dst, b)
		i += w
	}
	return dst
}

func charToByte(r rune) (byte, bool) {
	if r < 0x144 && (r >= '!' && r <= '~' || r >= 0xA1 && r <= 0xAC || r >= 0xAE && r <= 0xFF) {
		return byte(r), true
	}
	if r < 256 || r >= 256+68 {
		return 0, false
	}
	b, ok := charByte[r]
	return b, ok
}
