// Package model serves one ONNX model through ONNX Runtime: it loads the
// library, chooses the device, introspects inputs and outputs, and runs
// batches of items as one Run, padding and splitting per item.
package model

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"
)

// Devices accepted by Params.Device.
const (
	DeviceAuto = "auto"
	DeviceCPU  = "cpu"
	DeviceCUDA = "cuda"
)

// Params configures an Engine.
type Params struct {
	// Library is the path of libonnxruntime.so. The library is loaded once
	// per process; later Engines must name the same file.
	Library string
	// Model is the path of the .onnx file; Data, when set, is the model's
	// bytes instead, and Name must then be set.
	Model string
	Data  []byte
	// ExternalFolder, with Data, is the folder the model's external
	// data files are read from (a graph derived in memory from the file
	// Model, whose weights lie beside it). With it, the inputs and
	// outputs are read from Model (ONNX Runtime finds no external data
	// for a model read from bytes otherwise): Data must keep their names
	// and types.
	ExternalFolder string
	// Name is the served model's name; default: Model's base name without
	// ".onnx".
	Name string
	// Device is auto (try CUDA, fall back to CPU), cpu or cuda (fail if
	// CUDA cannot be used).
	Device string
	// IntraOpThreads is ONNX Runtime's thread count for one Run; 0 means
	// GOMAXPROCS divided by Workers, at least 1: each concurrent batch gets
	// its share of the cores and the Go side is not starved.
	IntraOpThreads int
	// Workers is how many batches may run at once (used for the default
	// thread count).
	Workers int
	// StateIn and StateOut name the recurrent state pair; defaults
	// "state_in" and "state_out".
	StateIn, StateOut string
	// PadInt is the value integer sequence inputs are padded with (float
	// inputs are padded with 0). Default 0.
	PadInt int64
	// MaxElements bounds the elements of one item's input tensor; default
	// 1<<22.
	MaxElements int64
	// Logger receives the device choice; default slog.Default().
	Logger *slog.Logger
}

// Engine runs batches through one shared DynamicAdvancedSession. Its
// methods are safe for concurrent use.
type Engine struct {
	name      string
	device    string
	session   *ort.DynamicAdvancedSession
	inputs    []Info
	outputs   []Info
	stateIn   int // index into inputs, or -1
	stateOut  int // index into outputs, or -1
	padInt    int64
	maxElems  int64
	metadata  map[string]string
	seqInputs []bool // inputs whose dimension 1 is dynamic and padded
	unbatched bool   // some input has no batch dimension: Run refuses
}

var (
	libMu   sync.Mutex // guards libPath
	libPath string
)

// loadLibrary initialises ONNX Runtime once per process.
func loadLibrary(path string) error {
	libMu.Lock()
	defer libMu.Unlock()
	if libPath != "" {
		if libPath != path {
			return fmt.Errorf("model: ONNX Runtime already loaded from %s, cannot load %s", libPath, path)
		}
		return nil
	}
	ort.SetSharedLibraryPath(path)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return fmt.Errorf("model: load ONNX Runtime from %s: %w", path, err)
	}
	libPath = path
	return nil
}

// New loads the model and creates its session on the chosen device.
func New(p Params) (*Engine, error) {
	if p.Logger == nil {
		p.Logger = slog.Default()
	}
	if p.StateIn == "" {
		p.StateIn = "state_in"
	}
	if p.StateOut == "" {
		p.StateOut = "state_out"
	}
	if p.MaxElements == 0 {
		p.MaxElements = 1 << 22
	}
	if p.Workers < 1 {
		p.Workers = 1
	}
	if p.IntraOpThreads == 0 {
		p.IntraOpThreads = max(1, runtime.GOMAXPROCS(0)/p.Workers)
	}
	if p.Name == "" {
		p.Name = strings.TrimSuffix(filepath.Base(p.Model), ".onnx")
	}
	switch p.Device {
	case "":
		p.Device = DeviceAuto
	case DeviceAuto, DeviceCPU, DeviceCUDA:
	default:
		return nil, fmt.Errorf("model: device %q: want auto, cpu or cuda", p.Device)
	}
	if err := loadLibrary(p.Library); err != nil {
		return nil, err
	}

	var ins, outs []ort.InputOutputInfo
	var err error
	if p.Data != nil && p.ExternalFolder == "" {
		ins, outs, err = ort.GetInputOutputInfoWithONNXData(p.Data)
	} else {
		ins, outs, err = ort.GetInputOutputInfo(p.Model)
	}
	if err != nil {
		return nil, fmt.Errorf("model: read %s: %w", p.Name, err)
	}
	e := &Engine{name: p.Name, stateIn: -1, stateOut: -1, padInt: p.PadInt, maxElems: p.MaxElements}
	if e.inputs, err = infos(ins, "input"); err != nil {
		return nil, fmt.Errorf("model: %s: %w", p.Name, err)
	}
	for _, in := range e.inputs {
		if in.Unbatched {
			e.unbatched = true
		}
	}
	if e.outputs, err = infos(outs, "output"); err != nil {
		return nil, fmt.Errorf("model: %s: %w", p.Name, err)
	}
	e.seqInputs = make([]bool, len(e.inputs))
	for i, in := range e.inputs {
		e.seqInputs[i] = !in.Unbatched && len(in.Shape) >= 2 && in.Shape[1] < 0
		if in.Name == p.StateIn {
			e.stateIn = i
		}
	}
	for i, out := range e.outputs {
		if out.Name == p.StateOut {
			e.stateOut = i
		}
	}
	if (e.stateIn < 0) != (e.stateOut < 0) {
		return nil, fmt.Errorf("model: %s: has only one of the state pair %q/%q", p.Name, p.StateIn, p.StateOut)
	}

	e.session, e.device, err = newSession(p, e.inputs, e.outputs)
	if err != nil {
		return nil, err
	}
	if e.metadata, err = readMetadata(e.session); err != nil {
		e.session.Destroy()
		return nil, fmt.Errorf("model: %s: %w", p.Name, err)
	}
	return e, nil
}

func infos(list []ort.InputOutputInfo, kind string) ([]Info, error) {
	out := make([]Info, 0, len(list))
	for _, io := range list {
		if io.OrtValueType != ort.ONNXTypeTensor {
			return nil, fmt.Errorf("%s %q is a %s, only tensors are served", kind, io.Name, io.OrtValueType)
		}
		var dt DType
		switch io.DataType {
		case ort.TensorElementDataTypeFloat:
			dt = FP32
		case ort.TensorElementDataTypeInt64:
			dt = INT64
		case ort.TensorElementDataTypeInt32:
			dt = INT32
		case ort.TensorElementDataTypeFloat16:
			dt = FP16
		case ort.TensorElementDataTypeBFloat16:
			dt = BF16
		case ort.TensorElementDataTypeBool:
			dt = BOOL
		default:
			return nil, fmt.Errorf("%s %q has element type %s; FP32, FP16, BF16, INT64, INT32 and BOOL are served", kind, io.Name, io.DataType)
		}
		shape := []int64(io.Dimensions)
		unbatched := len(shape) == 0 || shape[0] >= 0
		if unbatched && (kind != "input" || slices.Contains(shape, -1)) {
			return nil, fmt.Errorf("%s %q has shape %v: the first dimension must be the dynamic batch dimension", kind, io.Name, shape)
		}
		out = append(out, Info{Name: io.Name, DType: dt, Shape: append([]int64{}, shape...), Unbatched: unbatched})
	}
	return out, nil
}

func names(list []Info) []string {
	s := make([]string, len(list))
	for i, in := range list {
		s[i] = in.Name
	}
	return s
}

func newSession(p Params, ins, outs []Info) (*ort.DynamicAdvancedSession, string, error) {
	create := func(cuda bool) (*ort.DynamicAdvancedSession, error) {
		opts, err := ort.NewSessionOptions()
		if err != nil {
			return nil, err
		}
		defer opts.Destroy()
		if err := opts.SetIntraOpNumThreads(p.IntraOpThreads); err != nil {
			return nil, err
		}
		// Concurrency comes from Workers batches, not from parallel
		// branches inside one graph.
		if err := opts.SetInterOpNumThreads(1); err != nil {
			return nil, err
		}
		// Idle ONNX Runtime threads spin by default, taking the cores the
		// HTTP, JSON and state work between batches needs.
		if err := opts.AddSessionConfigEntry("session.intra_op.allow_spinning", "0"); err != nil {
			return nil, err
		}
		if cuda {
			cudaOpts, err := ort.NewCUDAProviderOptions()
			if err != nil {
				return nil, err
			}
			defer cudaOpts.Destroy()
			if err := opts.AppendExecutionProviderCUDA(cudaOpts); err != nil {
				return nil, err
			}
		}
		if p.Data != nil {
			if p.ExternalFolder != "" {
				if err := opts.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", p.ExternalFolder); err != nil {
					return nil, err
				}
			}
			return ort.NewDynamicAdvancedSessionWithONNXData(p.Data, names(ins), names(outs), opts)
		}
		return ort.NewDynamicAdvancedSession(p.Model, names(ins), names(outs), opts)
	}
	if p.Device == DeviceAuto {
		// ONNX Runtime loads the CUDA provider from beside the core library;
		// without it, trying would only print a loader error.
		provider := filepath.Join(filepath.Dir(p.Library), "libonnxruntime_providers_cuda.so")
		if _, err := os.Stat(provider); err != nil {
			p.Logger.Info("CUDA unavailable, falling back to CPU", "model", p.Name, "reason", provider+" not found")
			p.Device = DeviceCPU
		}
	}
	if p.Device != DeviceCPU {
		s, err := create(true)
		if err == nil {
			p.Logger.Info("model session on CUDA", "model", p.Name)
			return s, DeviceCUDA, nil
		}
		if p.Device == DeviceCUDA {
			return nil, "", fmt.Errorf("model: %s: CUDA requested (SOUS_DEVICE=cuda) but unavailable: %w", p.Name, err)
		}
		p.Logger.Info("CUDA unavailable, falling back to CPU", "model", p.Name, "reason", err.Error())
	}
	s, err := create(false)
	if err != nil {
		return nil, "", fmt.Errorf("model: %s: create session: %w", p.Name, err)
	}
	p.Logger.Info("model session on CPU", "model", p.Name, "intra_op_threads", p.IntraOpThreads)
	return s, DeviceCPU, nil
}

func readMetadata(s *ort.DynamicAdvancedSession) (map[string]string, error) {
	md, err := s.GetModelMetadata()
	if err != nil {
		return nil, fmt.Errorf("read metadata: %w", err)
	}
	defer md.Destroy()
	keys, err := md.GetCustomMetadataMapKeys()
	if err != nil {
		return nil, fmt.Errorf("read metadata: %w", err)
	}
	m := make(map[string]string, len(keys))
	for _, k := range keys {
		v, _, err := md.LookupCustomMetadataMap(k)
		if err != nil {
			return nil, fmt.Errorf("read metadata %q: %w", k, err)
		}
		m[k] = v
	}
	return m, nil
}

// Metadata returns the model's custom metadata value for key, or "".
func (e *Engine) Metadata(key string) string { return e.metadata[key] }

// Close releases the session.
func (e *Engine) Close() error { return e.session.Destroy() }

// Name is the served model's name.
func (e *Engine) Name() string { return e.name }

// Device is "cpu" or "cuda".
func (e *Engine) Device() string { return e.device }

// Inputs describes the model's inputs, in Run order. Callers must not
// modify the result.
func (e *Engine) Inputs() []Info { return e.inputs }

// Outputs describes the model's outputs, in Run order. Callers must not
// modify the result.
func (e *Engine) Outputs() []Info { return e.outputs }

// State returns the indexes of the recurrent state input and output, or -1
// and false if the model has none.
func (e *Engine) State() (in, out int, ok bool) {
	return e.stateIn, e.stateOut, e.stateIn >= 0
}

// Check validates one item's inputs (in Inputs order) against the model:
// names, datatypes, ranks, fixed dimensions, element counts, finite
// numbers. Errors wrap ErrInput. Rows must agree across inputs.
func (e *Engine) Check(item []Tensor) error {
	if len(item) != len(e.inputs) {
		return inputErr("model %s takes %d inputs, got %d", e.name, len(e.inputs), len(item))
	}
	for i := range item {
		if item[i].Name != e.inputs[i].Name {
			return inputErr("input %d is %q, model expects %q", i, item[i].Name, e.inputs[i].Name)
		}
		if err := check(&item[i], e.inputs[i], e.maxElems); err != nil {
			return err
		}
		if !e.inputs[i].Unbatched && !e.inputs[0].Unbatched && item[i].Shape[0] != item[0].Shape[0] {
			return inputErr("input %q has %d rows, input %q has %d", item[i].Name, item[i].Shape[0], item[0].Name, item[0].Shape[0])
		}
	}
	return nil
}

// Order arranges named tensors in the model's input order, or says which
// is missing or unknown.
func (e *Engine) Order(tensors []Tensor) ([]Tensor, error) {
	out := make([]Tensor, len(e.inputs))
	seen := make([]bool, len(e.inputs))
	for _, t := range tensors {
		i := e.inputIndex(t.Name)
		if i < 0 {
			return nil, inputErr("model %s has no input %q (inputs: %s)", e.name, t.Name, strings.Join(names(e.inputs), ", "))
		}
		if seen[i] {
			return nil, inputErr("input %q given twice", t.Name)
		}
		seen[i] = true
		out[i] = t
	}
	for i, ok := range seen {
		if !ok {
			return nil, inputErr("input %q is missing", e.inputs[i].Name)
		}
	}
	return out, nil
}

func (e *Engine) inputIndex(name string) int {
	for i, in := range e.inputs {
		if in.Name == name {
			return i
		}
	}
	return -1
}

// ErrRun marks a failure of ONNX Runtime itself during a Run.
var ErrRun = errors.New("model: run failed")

// Run executes items as one batch: each item's tensors (checked with
// Check) are concatenated along dimension 0, dynamic dimensions padded to
// the longest in the batch. Each item gets its own outputs, rows split back
// and, for outputs whose dimension 1 is dynamic, trimmed to the item's own
// sequence length (dimension 1 of its first padded input). ctx ending
// terminates the Run.
func (e *Engine) Run(ctx context.Context, items [][]Tensor) ([][]Tensor, error) {
	if len(items) == 0 {
		return nil, nil
	}
	if e.unbatched {
		return nil, fmt.Errorf("%w: model %s has inputs without a batch dimension; Run cannot batch it, RunWhole and RunBound take it", ErrInput, e.name)
	}
	rows := make([]int64, len(items))
	var total int64
	for k, it := range items {
		rows[k] = it[0].Shape[0]
		total += rows[k]
	}

	values := make([]ort.Value, 0, len(e.inputs))
	defer func() {
		for _, v := range values {
			v.Destroy()
		}
	}()
	seqLen := make([]int64, len(items)) // per item; 0 if no padded input
	for i, in := range e.inputs {
		shape := make([]int64, len(in.Shape))
		shape[0] = total
		for d := 1; d < len(shape); d++ {
			for _, it := range items {
				shape[d] = max(shape[d], it[i].Shape[d])
			}
		}
		if e.seqInputs[i] {
			for k, it := range items {
				if seqLen[k] == 0 {
					seqLen[k] = it[i].Shape[1]
				}
			}
		}
		v, err := e.batchInput(in, i, shape, items)
		if err != nil {
			return nil, err
		}
		values = append(values, v)
	}

	if o := e.halfOutput(nil); o >= 0 {
		return nil, fmt.Errorf("%w: %s: output %q is %s; Run cannot bind it, RunBound can", ErrNotBound, e.name, e.outputs[o].Name, e.outputs[o].DType)
	}
	outs, err := e.call(ctx, values)
	if err != nil {
		return nil, err
	}
	defer destroy(outs)

	results := make([][]Tensor, len(items))
	for k := range results {
		results[k] = make([]Tensor, len(e.outputs))
	}
	for o, info := range e.outputs {
		shape := []int64(outs[o].GetShape())
		if len(shape) == 0 || shape[0] != total {
			return nil, fmt.Errorf("%w: %s: output %q has shape %v, want %d rows", ErrRun, e.name, info.Name, shape, total)
		}
		trim := len(info.Shape) >= 2 && info.Shape[1] < 0
		var start int64
		for k := range items {
			itemShape := append([]int64(nil), shape...)
			itemShape[0] = rows[k]
			if trim && seqLen[k] > 0 && seqLen[k] < shape[1] {
				itemShape[1] = seqLen[k]
			}
			t := Tensor{Name: info.Name, DType: info.DType, Shape: itemShape}
			switch v := outs[o].(type) {
			case *ort.Tensor[float32]:
				t.F32 = splitRows(v.GetData(), shape, start, itemShape)
			case *ort.Tensor[int64]:
				t.I64 = splitRows(v.GetData(), shape, start, itemShape)
			case *ort.Tensor[int32]:
				t.I32 = splitRows(v.GetData(), shape, start, itemShape)
			case *ort.Tensor[bool]:
				t.B = splitRows(v.GetData(), shape, start, itemShape)
			case *ort.CustomDataTensor:
				return nil, fmt.Errorf("%w: %s: output %q is %s", ErrNotBound, e.name, info.Name, info.DType)
			default:
				return nil, fmt.Errorf("%w: %s: output %q has unexpected type %T", ErrRun, e.name, info.Name, v)
			}
			results[k][o] = t
			start += rows[k]
		}
	}
	return results, nil
}

// call runs the session once; ctx ending terminates the run. The caller
// destroys the outputs.
func (e *Engine) call(ctx context.Context, values []ort.Value) ([]ort.Value, error) {
	return e.callInto(ctx, values, make([]ort.Value, len(e.outputs)))
}

// callInto is call with outputs that are not nil bound beforehand: ONNX
// Runtime writes those in place.
func (e *Engine) callInto(ctx context.Context, values, outs []ort.Value) ([]ort.Value, error) {
	opts, err := ort.NewRunOptions()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRun, err)
	}
	defer opts.Destroy()
	stop := context.AfterFunc(ctx, func() { opts.Terminate() })
	defer stop()
	if err := e.session.RunWithOptions(values, outs, opts); err != nil {
		destroy(outs)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrRun, e.name, err)
	}
	return outs, nil
}

func destroy(values []ort.Value) {
	for _, v := range values {
		// A failed Run can leave typed nils (a nil *CustomDataTensor).
		if v != nil && !reflect.ValueOf(v).IsNil() {
			v.Destroy()
		}
	}
}

// halfOutput is the first output that ONNX Runtime would allocate as a
// 16-bit float (bound[o] nil), or -1.
func (e *Engine) halfOutput(bound []ort.Value) int {
	for o, info := range e.outputs {
		if (info.DType == FP16 || info.DType == BF16) && (bound == nil || bound[o] == nil) {
			return o
		}
	}
	return -1
}

// splitRows copies rows [start, start+want[0]) of data (shape full) into a
// new slice of shape want, dropping padding at the end of each dimension.
func splitRows[T any](data []T, full []int64, start int64, want []int64) []T {
	n := int64(1)
	for _, d := range want {
		n *= d
	}
	out := make([]T, n)
	stride := int64(1)
	for _, d := range full[1:] {
		stride *= d
	}
	copyBlock(out, want, data[start*stride:], full, want)
	return out
}

func (e *Engine) batchInput(in Info, i int, shape []int64, items [][]Tensor) (ort.Value, error) {
	switch in.DType {
	case FP32:
		return concat(items, i, shape, 0, func(t *Tensor) []float32 { return t.F32 })
	case INT64:
		return concat(items, i, shape, e.padInt, func(t *Tensor) []int64 { return t.I64 })
	case INT32:
		return concat(items, i, shape, int32(e.padInt), func(t *Tensor) []int32 { return t.I32 })
	case BOOL:
		return concat(items, i, shape, false, func(t *Tensor) []bool { return t.B })
	case FP16, BF16:
		rowSize := int64(1)
		for _, d := range shape[1:] {
			rowSize *= d
		}
		out := Tensor{DType: in.DType, Shape: shape, F16: make([]uint16, shape[0]*rowSize)}
		var offset int64
		for _, it := range items {
			copyBlock(out.F16[offset:], shape, it[i].F16, it[i].Shape, it[i].Shape)
			offset += it[i].Shape[0] * rowSize
		}
		return newValue(&out)
	}
	return nil, fmt.Errorf("model: input %q: unsupported datatype %s", in.Name, in.DType)
}

// ErrNotBound marks an FP16 or BF16 output that the caller did not bind to
// its own memory. onnxruntime_go v1.27.0 copies such an output, when ONNX
// Runtime allocates it, with its element count taken as its byte count
// (half the data; the Run then fails). Bind it with RunBound's Bind.Into (or
// Shared), in a tensor of the output's exact shape.
var ErrNotBound = errors.New("model: a 16-bit float output must be bound to caller memory (Bind.Into)")

// newValue wraps t's memory as an ONNX Runtime value, nothing copied: t's
// data must stay as it is until the value is destroyed (ONNX Runtime
// writes bound outputs into it).
func newValue(t *Tensor) (ort.Value, error) {
	shape := ort.Shape(t.Shape)
	if len(shape) == 0 { // a scalar (num_logits_to_keep): its own constructor
		if t.Len() != 1 {
			return nil, fmt.Errorf("a scalar holds one element, data has %d", t.Len())
		}
		switch t.DType {
		case FP32:
			return ort.NewScalar(t.F32[0])
		case INT64:
			return ort.NewScalar(t.I64[0])
		case INT32:
			return ort.NewScalar(t.I32[0])
		case BOOL:
			return ort.NewScalar(t.B[0])
		}
		return nil, fmt.Errorf("a %s scalar is not supported", t.DType)
	}
	switch t.DType {
	case FP32:
		return ort.NewTensor(shape, t.F32)
	case INT64:
		return ort.NewTensor(shape, t.I64)
	case INT32:
		return ort.NewTensor(shape, t.I32)
	case BOOL:
		return ort.NewTensor(shape, t.B)
	case FP16, BF16:
		dt := ort.TensorElementDataType(ort.TensorElementDataTypeFloat16)
		if t.DType == BF16 {
			dt = ort.TensorElementDataType(ort.TensorElementDataTypeBFloat16)
		}
		data := t.F16
		if len(data) == 0 {
			// An empty tensor (a first step's zero-length past) still needs
			// a buffer: ONNX Runtime only checks that it is big enough.
			data = make([]uint16, 1)
		}
		return ort.NewCustomDataTensor(shape, unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(data))), 2*len(data)), dt)
	}
	return nil, fmt.Errorf("unsupported datatype %s", t.DType)
}

// concat builds the batch tensor of input i: every item's rows, one after
// another, each padded with pad to the batch's shape.
func concat[T ort.TensorData](items [][]Tensor, i int, shape []int64, pad T, data func(*Tensor) []T) (ort.Value, error) {
	rowSize := int64(1)
	for _, d := range shape[1:] {
		rowSize *= d
	}
	out := make([]T, shape[0]*rowSize)
	var zero T
	if pad != zero {
		fill(out, pad)
	}
	var offset int64
	for _, it := range items {
		copyBlock(out[offset:], shape, data(&it[i]), it[i].Shape, it[i].Shape)
		offset += it[i].Shape[0] * rowSize
	}
	return ort.NewTensor(ort.Shape(shape), out)
}

// Warm runs one batch of rows zero-valued rows (dynamic dimensions 8 long)
// so that the first request does not pay for ONNX Runtime's lazy setup.
func (e *Engine) Warm(ctx context.Context, rows int) error {
	item := make([]Tensor, len(e.inputs))
	for i, in := range e.inputs {
		shape := make([]int64, len(in.Shape))
		if len(shape) > 0 {
			shape[0] = 1
		}
		n := int64(1)
		for d := 1; d < len(shape); d++ {
			shape[d] = in.Shape[d]
			if shape[d] < 0 {
				shape[d] = 8
			}
			n *= shape[d]
		}
		item[i] = NewTensor(in.Name, in.DType, shape)
	}
	items := make([][]Tensor, max(1, rows))
	for k := range items {
		items[k] = item
	}
	_, err := e.Run(ctx, items)
	return err
}

// FindLibrary returns the ONNX Runtime library to load when none is
// configured (SOUS_ORT_LIB, read by package config): the
// bin/libonnxruntime.so that `make` fetched, looked for in the working
// folder and its parents (so that tests in sub-packages find it too).
func FindLibrary() string {
	dir, err := os.Getwd()
	if err != nil {
		return "bin/libonnxruntime.so"
	}
	for {
		p := filepath.Join(dir, "bin", "libonnxruntime.so")
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "bin/libonnxruntime.so"
		}
		dir = parent
	}
}

// RunWhole runs one call with ins as they are (one tensor per model input,
// in the model's input order, already laid out as a batch) and returns
// every output whole. It is for callers that build their own batches, as
// the decode engine does with its per-sequence KV cache; Run is the
// batcher's path.
func (e *Engine) RunWhole(ctx context.Context, ins []Tensor) ([]Tensor, error) {
	return e.runWhole(ctx, ins, Bind{}, nil)
}

// RunView is RunWhole without copying the outputs: view sees them in ONNX
// Runtime's own memory, valid only until it returns.
func (e *Engine) RunView(ctx context.Context, ins []Tensor, view func(outs []Tensor) error) error {
	_, err := e.runWhole(ctx, ins, Bind{}, view)
	return err
}

// Bind names outputs that ONNX Runtime writes straight into the caller's
// memory instead of its own.
type Bind struct {
	// Shared maps an output's index to the input whose buffer it is (the
	// output takes that input's shape): a KV cache that past and present
	// share, as GroupQueryAttention's is; ONNX Runtime sees the same
	// memory on both sides and appends the new positions to it.
	Shared map[int]int
	// Into maps an output's index to a tensor of exactly the output's
	// shape and type to write it into (logits into a buffer reused step
	// after step, nothing copied out of ONNX Runtime). FP16 and BF16
	// outputs must be bound, here or in Shared (see ErrNotBound).
	Into map[int]Tensor
}

// RunBound is RunView with outputs bound to the caller's memory as b
// says. view sees every output, bound ones included.
func (e *Engine) RunBound(ctx context.Context, ins []Tensor, b Bind, view func(outs []Tensor) error) error {
	_, err := e.runWhole(ctx, ins, b, view)
	return err
}

func (e *Engine) runWhole(ctx context.Context, ins []Tensor, b Bind, view func(outs []Tensor) error) ([]Tensor, error) {
	if len(ins) != len(e.inputs) {
		return nil, inputErr("want %d inputs, got %d", len(e.inputs), len(ins))
	}
	values := make([]ort.Value, 0, len(ins))
	defer func() { destroy(values) }()
	for i := range ins {
		v, err := newValue(&ins[i])
		if err != nil {
			return nil, fmt.Errorf("model: input %q: %w", e.inputs[i].Name, err)
		}
		values = append(values, v)
	}
	bound := make([]ort.Value, len(e.outputs))
	boundTo := make([]*Tensor, len(e.outputs))
	bind := func(o int, t *Tensor) error {
		if o < 0 || o >= len(bound) || bound[o] != nil || t.DType != e.outputs[o].DType {
			return inputErr("output %d cannot be bound to %s %v", o, t.DType, t.Shape)
		}
		v, err := newValue(t)
		if err != nil {
			return fmt.Errorf("model: output %q: %w", e.outputs[o].Name, err)
		}
		bound[o], boundTo[o] = v, t
		return nil
	}
	for o, i := range b.Shared {
		if i < 0 || i >= len(ins) {
			destroy(bound)
			return nil, inputErr("output %d cannot share input %d", o, i)
		}
		if err := bind(o, &ins[i]); err != nil {
			destroy(bound)
			return nil, err
		}
	}
	for o, t := range b.Into {
		if err := bind(o, &t); err != nil {
			destroy(bound)
			return nil, err
		}
	}
	if o := e.halfOutput(bound); o >= 0 {
		destroy(bound)
		return nil, fmt.Errorf("%w: %s: output %q is %s", ErrNotBound, e.name, e.outputs[o].Name, e.outputs[o].DType)
	}
	outs, err := e.callInto(ctx, values, bound) // destroys bound on error
	if err != nil {
		return nil, err
	}
	defer destroy(outs)
	res := make([]Tensor, len(outs))
	for o, info := range e.outputs {
		if bt := boundTo[o]; bt != nil {
			res[o] = *bt
			res[o].Name = info.Name
			continue
		}
		t := Tensor{Name: info.Name, DType: info.DType, Shape: []int64(outs[o].GetShape())}
		switch v := outs[o].(type) {
		case *ort.Tensor[float32]:
			t.F32 = v.GetData()
		case *ort.Tensor[int64]:
			t.I64 = v.GetData()
		case *ort.Tensor[int32]:
			t.I32 = v.GetData()
		case *ort.Tensor[bool]:
			t.B = v.GetData()
		case *ort.CustomDataTensor:
			return nil, fmt.Errorf("%w: %s: output %q is %s", ErrNotBound, e.name, info.Name, info.DType)
		default:
			return nil, fmt.Errorf("%w: %s: output %q has unexpected type %T", ErrRun, e.name, info.Name, v)
		}
		res[o] = t
	}
	if view != nil {
		return nil, view(res)
	}
	for o := range res { // copies that outlive the call's values
		if boundTo[o] != nil {
			continue // the caller's own memory
		}
		res[o].F32 = append([]float32(nil), res[o].F32...)
		res[o].I64 = append([]int64(nil), res[o].I64...)
		res[o].I32 = append([]int32(nil), res[o].I32...)
		res[o].B = append([]bool(nil), res[o].B...)
	}
	return res, nil
}
