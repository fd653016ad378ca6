package tasks

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
)

// LastPositionGraph derives, from the decoder graph at path, one that
// computes logits at the last position only: a prompt's prefill otherwise
// multiplies every position's hidden state by the output projection
// (vocabulary × hidden) to sample one token. It applies to the exporters'
// form, a decoder (past_key_values inputs) without a num_logits_to_keep
// input whose logits [batch, seq, vocab] come from a MatMul (or
// MatMulNBits, q4), possibly through Casts or Identities, over the last
// hidden states:
// a Slice of the last position goes before the projection, and the logits
// output's seq dimension becomes 1. The derived model is returned as bytes,
// for a session loaded from memory (external data stays where it is, read
// from path's folder): nothing is written. It returns nil and why not when
// the graph is not of that form (reason "" for a graph that needs nothing:
// not a decoder, or one with num_logits_to_keep).
func LastPositionGraph(path string) ([]byte, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	var graph []byte
	if err := fields(b, func(num protowire.Number, v []byte) error {
		if num == 7 { // ModelProto.graph
			graph = v
		}
		return nil
	}); err != nil || graph == nil {
		return nil, "", fmt.Errorf("%s: %w", path, ErrNotONNX)
	}
	type node struct {
		ins, outs []string
		op        string
	}
	var nodes []node
	var inputs []string
	logitsRank := -1
	err = fields(graph, func(num protowire.Number, v []byte) error {
		switch num {
		case 1: // GraphProto.node
			var n node
			err := fields(v, func(num protowire.Number, v []byte) error {
				switch num {
				case 1:
					n.ins = append(n.ins, string(v))
				case 2:
					n.outs = append(n.outs, string(v))
				case 4:
					n.op = string(v)
				}
				return nil
			})
			nodes = append(nodes, n)
			return err
		case 11: // GraphProto.input
			name, _ := valueInfo(v)
			inputs = append(inputs, name)
		case 12: // GraphProto.output
			if name, rank := valueInfo(v); name == "logits" {
				logitsRank = rank
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	if !slices.Contains(inputs, "past_key_values.0.key") || slices.Contains(inputs, "num_logits_to_keep") {
		return nil, "", nil
	}
	if logitsRank != 3 {
		return nil, fmt.Sprintf("its logits output has rank %d, not [batch, seq, vocab]", logitsRank), nil
	}
	producer := func(name string) int {
		return slices.IndexFunc(nodes, func(n node) bool { return slices.Contains(n.outs, name) })
	}
	proj := producer("logits")
	for proj >= 0 && (nodes[proj].op == "Cast" || nodes[proj].op == "Identity") && len(nodes[proj].ins) == 1 {
		proj = producer(nodes[proj].ins[0])
	}
	if proj < 0 {
		return nil, "no node makes its logits", nil
	}
	if op := nodes[proj].op; op != "MatMul" && op != "MatMulNBits" {
		return nil, fmt.Sprintf("its logits come from %s, not a MatMul over the hidden states", op), nil
	}
	hidden := nodes[proj].ins[0]
	last := hidden + "/sous_last_position"
	const starts, ends, axes = "sous_last_position.starts", "sous_last_position.ends", "sous_last_position.axes"

	var slice []byte
	for _, in := range []string{hidden, starts, ends, axes} {
		slice = appendString(slice, 1, in)
	}
	slice = appendString(slice, 2, last)
	slice = appendString(slice, 3, "sous_last_position")
	slice = appendString(slice, 4, "Slice")

	var out []byte
	i := -1
	err = each(graph, func(num protowire.Number, raw, v []byte) error {
		switch num {
		case 1:
			if i++; i != proj {
				break
			}
			// The projection takes the last position's hidden state.
			out = protowire.AppendTag(out, 1, protowire.BytesType)
			out = protowire.AppendBytes(out, slice)
			var n []byte
			first := true
			if err := each(v, func(num protowire.Number, raw, v []byte) error {
				if num == 1 && first {
					first = false
					n = appendString(n, 1, last)
					return nil
				}
				n = append(n, raw...)
				return nil
			}); err != nil {
				return err
			}
			out = protowire.AppendTag(out, 1, protowire.BytesType)
			out = protowire.AppendBytes(out, n)
			return nil
		case 12:
			if name, _ := valueInfo(v); name == "logits" {
				vi, err := oneDim(v, 1)
				if err != nil {
					return err
				}
				out = protowire.AppendTag(out, 12, protowire.BytesType)
				out = protowire.AppendBytes(out, vi)
				return nil
			}
		}
		out = append(out, raw...)
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	for _, t := range []struct {
		name string
		v    int64
	}{{starts, -1}, {ends, math.MaxInt64}, {axes, 1}} {
		out = protowire.AppendTag(out, 5, protowire.BytesType) // GraphProto.initializer
		out = protowire.AppendBytes(out, int64Tensor(t.name, t.v))
	}
	var model []byte
	err = each(b, func(num protowire.Number, raw, v []byte) error {
		if num == 7 {
			model = protowire.AppendTag(model, 7, protowire.BytesType)
			model = protowire.AppendBytes(model, out)
			return nil
		}
		model = append(model, raw...)
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	return model, "", nil
}

// valueInfo is a ValueInfoProto's name and its tensor's rank (-1 without
// a shape).
func valueInfo(v []byte) (string, int) {
	name, rank := "", -1
	fields(v, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			name = string(v)
		case 2: // type
			fields(v, func(num protowire.Number, v []byte) error {
				if num != 1 { // tensor_type
					return nil
				}
				return fields(v, func(num protowire.Number, v []byte) error {
					if num == 2 { // shape
						rank = 0
						fields(v, func(num protowire.Number, v []byte) error {
							if num == 1 {
								rank++
							}
							return nil
						})
					}
					return nil
				})
			})
		}
		return nil
	})
	return name, rank
}

// oneDim rewrites a ValueInfoProto's tensor shape with dimension at fixed
// to 1.
func oneDim(vi []byte, at int) ([]byte, error) {
	nest := func(b []byte, num protowire.Number, fn func([]byte) ([]byte, error)) ([]byte, error) {
		var out []byte
		err := each(b, func(n protowire.Number, raw, v []byte) error {
			if n != num {
				out = append(out, raw...)
				return nil
			}
			w, err := fn(v)
			if err == errKeep {
				out = append(out, raw...)
				return nil
			}
			if err != nil {
				return err
			}
			out = protowire.AppendTag(out, n, protowire.BytesType)
			out = protowire.AppendBytes(out, w)
			return nil
		})
		return out, err
	}
	return nest(vi, 2, func(t []byte) ([]byte, error) { // type
		return nest(t, 1, func(tt []byte) ([]byte, error) { // tensor_type
			return nest(tt, 2, func(shape []byte) ([]byte, error) { // shape
				d := -1
				return nest(shape, 1, func([]byte) ([]byte, error) { // dim
					if d++; d != at {
						return nil, errKeep
					}
					return protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1), nil // dim_value 1
				})
			})
		})
	})
}

// errKeep, from a nest callback, keeps the field as it was.
var errKeep = errors.New("keep")

// each calls fn with each field of the protobuf message b: its number, its
// whole encoding (tag and value) and, for length-delimited fields, its
// value.
func each(b []byte, fn func(num protowire.Number, raw, v []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ErrNotONNX
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return ErrNotONNX
		}
		raw := b[:n+m]
		var v []byte
		if typ == protowire.BytesType {
			v, _ = protowire.ConsumeBytes(b[n:])
		}
		if err := fn(num, raw, v); err != nil {
			return err
		}
		b = b[n+m:]
	}
	return nil
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// int64Tensor is a TensorProto of one int64 [1].
func int64Tensor(name string, v int64) []byte {
	var t []byte
	t = protowire.AppendVarint(protowire.AppendTag(t, 1, protowire.VarintType), 1) // dims [1]
	t = protowire.AppendVarint(protowire.AppendTag(t, 2, protowire.VarintType), 7) // data_type INT64
	t = appendString(t, 8, name)
	var raw [8]byte
	for i := range raw {
		raw[i] = byte(uint64(v) >> (8 * i))
	}
	t = protowire.AppendTag(t, 9, protowire.BytesType) // raw_data, little-endian
	return protowire.AppendBytes(t, raw[:])
}
