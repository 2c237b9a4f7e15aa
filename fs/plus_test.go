package fs

import "testing"

// lsDir is an ls -l of a directory of files: a READDIRPLUS request, then
// a LOOKUP of every file it left bare.
func (p *plusPolicy) lsDir(files int) {
	if p.lean() {
		for range files {
			p.skipped()
		}
		for range files {
			p.missed()
		}
	}
}

// findDir is a find over a directory: nobody stats its files.
func (p *plusPolicy) findDir(files int) {
	if p.lean() {
		for range files {
			p.skipped()
		}
	}
}

func TestPlusPolicy(t *testing.T) {
	var p plusPolicy
	if !p.lean() {
		t.Fatal("a new mount stats files in listings; want lean listings until LOOKUPs ask for more")
	}
	p.lsDir(10)
	if p.score.Load() <= 0 {
		t.Fatalf("after an ls -l of one directory (score %d), listings still leave files bare", p.score.Load())
	}
	lean := 0
	for range 100 {
		if p.lean() {
			lean++
		}
		p.lsDir(10)
	}
	if lean > 100/plusProbe+1 {
		t.Errorf("during an ls -lR, %d of 100 listings left files bare; want only the probes, 1 in %d", lean, plusProbe)
	}
	// A find afterwards: the probes' unused files bring lean listings back.
	dirs := 0
	for p.score.Load() > 0 {
		p.findDir(10)
		if dirs++; dirs > 1000 {
			t.Fatalf("after a find over 1000 directories (score %d), listings still stat files", p.score.Load())
		}
	}
	if s := p.score.Load(); s < -plusClamp || s > plusClamp {
		t.Fatalf("score %d out of [-%d, %d]", s, plusClamp, plusClamp)
	}
	for range 1000 {
		p.findDir(10)
	}
	if s := p.score.Load(); s != -plusClamp {
		t.Fatalf("score %d after a long find, want it clamped at %d so that one ls -l switches back quickly", s, -plusClamp)
	}
	for range plusClamp / 4 / 10 * 2 {
		p.lsDir(10)
	}
	if !(p.score.Load() > 0) {
		t.Fatalf("score %d after an ls -l of %d directories; want files stated again", p.score.Load(), plusClamp/4/10*2)
	}
}
