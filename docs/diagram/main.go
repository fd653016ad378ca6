// Command diagram writes docs/architecture.svg, the picture of sous's
// pipeline in the README, from the boxes and arrows declared below
// (`make docs`). Keeping the picture as code lets it change with the code.
package main

import (
	"fmt"
	"html"
	"log"
	"os"
	"strings"
)

// box is a labelled rectangle; lines after the first are smaller.
type box struct {
	id         string
	x, y, w, h int
	lines      []string
	fill       string
}

// arrow joins two boxes' edges, with an optional label at its middle.
type arrow struct {
	from, to string
	label    string
	dashed   bool
}

// group is a dashed frame around boxes (a pod, a process).
type group struct {
	x, y, w, h int
	label      string
}

var (
	groups = []group{
		{200, 20, 695, 220, "Knative pod (scaled by the KPA on requests in flight)"},
		{335, 55, 428, 175, "sous container"},
	}
	boxes = []box{
		{"callers", 10, 40, 150, 110, []string{"callers", "Knative broker/trigger", "HTTP (URL, OIP v2, OpenAI)", "Dapr invoke, pub/sub"}, "#f4f4f4"},
		{"qp", 215, 70, 100, 60, []string{"queue-proxy", "concurrency count"}, "#e8eef8"},
		{"api", 343, 80, 90, 60, []string{"api (edge)", "echo, CloudEvents", "status codes"}, "#fff6e0"},
		{"turn", 445, 80, 106, 60, []string{"turn service", "session order", "one transcript path"}, "#fff6e0"},
		{"ring", 563, 74, 94, 42, []string{"ring batcher", "never blocks"}, "#fff6e0"},
		{"engine", 563, 124, 94, 42, []string{"decode engine", "continuous batching"}, "#fff6e0"},
		{"ort", 667, 90, 86, 60, []string{"ONNX", "Runtime", "CUDA or CPU"}, "#fff6e0"},
		{"state", 445, 180, 212, 42, []string{"state store", "bulk read + write, ETag, TTL"}, "#fff6e0"},
		{"daprd", 778, 150, 112, 70, []string{"daprd sidecar", "state API (gRPC)", "invoke and pub/sub", "to sous on localhost"}, "#e8f4ea"},
		{"redis", 778, 260, 112, 50, []string{"Redis", "sessions, topics"}, "#e8f4ea"},
		{"kpa", 215, 250, 150, 55, []string{"Knative autoscaler", "adds/removes pods"}, "#e8eef8"},
		{"metrics", 10, 250, 150, 55, []string{"Prometheus, OTLP", "/metrics, traces"}, "#f4f4f4"},
	}
	arrows = []arrow{
		{"callers", "qp", "", false},
		{"qp", "api", "", false},
		{"api", "turn", "", false},
		{"turn", "ring", "", false},
		{"turn", "engine", "", false},
		{"ring", "ort", "", false},
		{"engine", "ort", "", false},
		{"turn", "state", "", false},
		{"state", "daprd", "", false},
		{"daprd", "redis", "", false},
		{"qp", "kpa", "concurrency", true},
		{"api", "metrics", "", true},
	}
)

func main() {
	out := "docs/architecture.svg"
	if len(os.Args) > 1 {
		out = os.Args[1]
	}
	if err := os.WriteFile(out, []byte(render()), 0o644); err != nil {
		log.Fatal(err)
	}
}

func render() string {
	var b strings.Builder
	b.WriteString(`<svg xmlns="http://www.w3.org/2000/svg" width="900" height="330" viewBox="0 0 900 330" font-family="Helvetica, Arial, sans-serif">` + "\n")
	b.WriteString(`<defs><marker id="a" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker></defs>` + "\n")
	b.WriteString(`<rect width="900" height="330" fill="white"/>` + "\n")
	for _, g := range groups {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" rx="8" fill="none" stroke="#999" stroke-dasharray="5,4"/>`+"\n", g.x, g.y, g.w, g.h)
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" fill="#666">%s</text>`+"\n", g.x+8, g.y+14, html.EscapeString(g.label))
	}
	byID := map[string]box{}
	for _, bx := range boxes {
		byID[bx.id] = bx
	}
	for _, a := range arrows {
		from, to := byID[a.from], byID[a.to]
		tx, ty := center(to)
		fx, fy := center(from)
		x1, y1 := edgePoint(from, tx, ty)
		x2, y2 := edgePoint(to, fx, fy)
		dash := ""
		if a.dashed {
			dash = ` stroke-dasharray="4,3"`
		}
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#444" stroke-width="1.3"%s marker-end="url(#a)"/>`+"\n", x1, y1, x2, y2, dash)
		if a.label != "" {
			fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10" fill="#333" text-anchor="middle">%s</text>`+"\n", (x1+x2)/2, (y1+y2)/2-5, html.EscapeString(a.label))
		}
	}
	for _, bx := range boxes {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" rx="5" fill="%s" stroke="#555"/>`+"\n", bx.x, bx.y, bx.w, bx.h, bx.fill)
		for i, l := range bx.lines {
			size, weight := 10, "normal"
			if i == 0 {
				size, weight = 12, "bold"
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="%d" font-weight="%s" text-anchor="middle">%s</text>`+"\n",
				bx.x+bx.w/2, bx.y+16+i*13, size, weight, html.EscapeString(l))
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func center(bx box) (int, int) { return bx.x + bx.w/2, bx.y + bx.h/2 }

// edgePoint is where the line from bx's center towards (tx, ty) leaves bx.
func edgePoint(bx box, tx, ty int) (int, int) {
	cx, cy := center(bx)
	dx, dy := float64(tx-cx), float64(ty-cy)
	if dx == 0 && dy == 0 {
		return cx, cy
	}
	sx, sy := 1e9, 1e9
	if dx != 0 {
		sx = float64(bx.w) / 2 / abs(dx)
	}
	if dy != 0 {
		sy = float64(bx.h) / 2 / abs(dy)
	}
	s := min(sx, sy)
	return cx + int(dx*s), cy + int(dy*s)
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}
