package imgpull

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Progress shows a pull as docker does: one line per layer. On a terminal
// the lines are redrawn in place with a bar; otherwise each layer prints a
// plain line when its state changes, and nothing in between.
// A nil *Progress shows nothing.
type Progress struct {
	mu     sync.Mutex
	w      io.Writer
	tty    bool
	layers []*LayerProgress
	drawn  int // lines of bars on screen (tty)
	last   time.Time
}

// NewProgress writes to w; tty selects bars redrawn in place.
func NewProgress(w io.Writer, tty bool) *Progress {
	return &Progress{w: w, tty: tty}
}

// LayerProgress is one layer's line.
type LayerProgress struct {
	p      *Progress
	id     string
	status string
	done   int64
	total  int64
}

// Layer adds a line for the layer with the given short ID.
func (p *Progress) Layer(id string) *LayerProgress {
	if p == nil {
		return nil
	}
	lp := &LayerProgress{p: p, id: id}
	p.mu.Lock()
	p.layers = append(p.layers, lp)
	p.mu.Unlock()
	return lp
}

// Finish leaves the layers' final lines as they are: later messages go
// below them.
func (p *Progress) Finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	p.redraw()
	p.layers, p.drawn = nil, 0
}

// Printf prints a message line (above the bars on a terminal).
func (p *Progress) Printf(format string, args ...any) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	fmt.Fprintf(p.w, format+"\n", args...)
	p.redraw()
}

// Status sets the layer's state ("Downloading", "Pull complete", ...).
func (lp *LayerProgress) Status(s string) {
	if lp == nil {
		return
	}
	p := lp.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if lp.status == s {
		return
	}
	lp.status = s
	if !p.tty {
		fmt.Fprintf(p.w, "%s: %s\n", lp.id, s)
		return
	}
	p.clear()
	p.redraw()
}

// Start sets the number of bytes expected and shows "Downloading".
func (lp *LayerProgress) Start(total int64) {
	if lp == nil {
		return
	}
	lp.p.mu.Lock()
	lp.total, lp.done = total, 0
	lp.p.mu.Unlock()
	lp.Status("Downloading")
}

// Add counts n more bytes downloaded.
func (lp *LayerProgress) Add(n int64) {
	if lp == nil {
		return
	}
	p := lp.p
	p.mu.Lock()
	defer p.mu.Unlock()
	lp.done += n
	if p.tty && time.Since(p.last) > 100*time.Millisecond {
		p.clear()
		p.redraw()
	}
}

// clear moves the cursor back up over the bars (caller holds mu).
func (p *Progress) clear() {
	if p.tty && p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA\x1b[J", p.drawn)
		p.drawn = 0
	}
}

// redraw prints every layer's line (caller holds mu).
func (p *Progress) redraw() {
	if !p.tty {
		return
	}
	var b strings.Builder
	for _, lp := range p.layers {
		b.WriteString(lp.id + ": " + lp.status)
		if lp.status == "Downloading" && lp.total > 0 {
			b.WriteString(" " + bar(lp.done, lp.total, 40) + " " + HumanSize(lp.done) + "/" + HumanSize(lp.total))
		}
		b.WriteString("\x1b[K\n")
	}
	fmt.Fprint(p.w, b.String())
	p.drawn = len(p.layers)
	p.last = time.Now()
}

func bar(done, total int64, width int) string {
	n := int(min(done, total) * int64(width) / total)
	s := "[" + strings.Repeat("=", n)
	if n < width {
		s += ">" + strings.Repeat(" ", width-n-1)
	}
	return s + "]"
}

// HumanSize formats a byte count as docker does (decimal units, 3 digits).
func HumanSize(n int64) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	return fmt.Sprintf("%.3g%s", f, units[i])
}

// progressReader counts what is read into a layer's progress.
type progressReader struct {
	r  io.Reader
	lp *LayerProgress
}

func (r *progressReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.lp.Add(int64(n))
	return n, err
}
