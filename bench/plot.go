package main

import (
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// plotCurves writes p50 and p99 latency against offered load for batching
// on (SOUS_MAX_BATCH=32) and off (1) as an SVG.
func plotCurves(path string, curves map[string][]Point) error {
	p := plot.New()
	p.Title.Text = "sous: latency vs offered load (bench model, 2 vCPU)"
	p.X.Label.Text = "offered load (turns/s)"
	p.Y.Label.Text = "latency (ms)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p.Legend.Left = true
	styles := []struct {
		batch, label, pct string
		color             color.RGBA
		dashed            bool
	}{
		{"32", "batching on (32), p50", "p50", color.RGBA{R: 31, G: 119, B: 180, A: 255}, false},
		{"32", "batching on (32), p99", "p99", color.RGBA{R: 31, G: 119, B: 180, A: 255}, true},
		{"1", "batching off (1), p50", "p50", color.RGBA{R: 214, G: 39, B: 40, A: 255}, false},
		{"1", "batching off (1), p99", "p99", color.RGBA{R: 214, G: 39, B: 40, A: 255}, true},
	}
	for _, s := range styles {
		var xy plotter.XYs
		for _, pt := range curves[s.batch] {
			y := pt.P50ms
			if s.pct == "p99" {
				y = pt.P99ms
			}
			xy = append(xy, plotter.XY{X: pt.OfferedRate, Y: max(y, 0.01)})
		}
		if err := addLine(p, xy, s.label, s.color, s.dashed); err != nil {
			return err
		}
	}
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}

// addLine adds a line with points and its legend entry to p, dashed or
// solid.
func addLine(p *plot.Plot, xy plotter.XYs, label string, c color.RGBA, dashed bool) error {
	line, points, err := plotter.NewLinePoints(xy)
	if err != nil {
		return err
	}
	line.Color, points.Color = c, c
	if dashed {
		line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	}
	p.Add(line, points)
	p.Legend.Add(label, line, points)
	return nil
}
