package imgpull

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/unionfs/unionfs/layerdb"
)

func TestSummarizeAndTable(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := "sha256:" + hex64('c')
	imgs := []layerdb.Image{
		{Name: "docker.io/library/alpine", Tag: "3.20", Config: cfg, Created: now.Add(-3 * 24 * time.Hour), Size: 7_800_000, Layers: []string{"x"}},
		{Name: "127.0.0.1:5000/app", Digest: "sha256:" + hex64('d'), Config: "sha256:" + hex64('e'), Created: now.Add(-2 * time.Hour), Size: 1234},
	}
	rows := Summarize(imgs, now)
	if rows[0].Repository != "127.0.0.1:5000/app" || rows[0].Tag != "<none>" || rows[1].Repository != "alpine" {
		t.Errorf("rows (newest first) = %+v", rows)
	}
	if imgs[0].Name != "docker.io/library/alpine" {
		t.Error("Summarize reordered its argument")
	}
	if rows[1].ID != hex64('c')[:12] || rows[1].Size != "7.8MB" || rows[1].CreatedSince != "3 days ago" {
		t.Errorf("alpine row = %+v", rows[1])
	}
	var buf bytes.Buffer
	if err := WriteTable(&buf, rows); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "REPOSITORY TAG IMAGE ID CREATED SIZE" {
		t.Errorf("table:\n%s", buf.String())
	}
	if f := strings.Fields(lines[2]); f[0] != "alpine" || f[1] != "3.20" || f[3] != "3" || f[len(f)-1] != "7.8MB" {
		t.Errorf("alpine line %q", lines[2])
	}
	buf.Reset()
	if err := WriteJSON(&buf, rows); err != nil {
		t.Fatal(err)
	}
	var s Summary
	if err := json.Unmarshal([]byte(strings.Split(buf.String(), "\n")[1]), &s); err != nil || s.Repository != "alpine" || s.SizeBytes != 7_800_000 {
		t.Errorf("json = %q (%v)", buf.String(), err)
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "Less than a second", 30 * time.Second: "30 seconds", time.Minute: "About a minute",
		5 * time.Minute: "5 minutes", time.Hour: "About an hour", 5 * time.Hour: "5 hours",
		3 * 24 * time.Hour: "3 days", 20 * 24 * time.Hour: "2 weeks", 100 * 24 * time.Hour: "3 months",
		3 * 365 * 24 * time.Hour: "3 years",
	} {
		if got := HumanDuration(d); got != want {
			t.Errorf("HumanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestProgress(t *testing.T) {
	var plain bytes.Buffer
	p := NewProgress(&plain, false)
	a, b := p.Layer("aaaaaaaaaaaa"), p.Layer("bbbbbbbbbbbb")
	a.Start(1000)
	a.Add(500)
	a.Add(500)
	a.Status("Pull complete")
	b.Status("Already exists")
	b.Status("Already exists")
	want := "aaaaaaaaaaaa: Downloading\naaaaaaaaaaaa: Pull complete\nbbbbbbbbbbbb: Already exists\n"
	if plain.String() != want {
		t.Errorf("plain progress:\n%q\nwant\n%q", plain.String(), want)
	}

	var tty bytes.Buffer
	p = NewProgress(&tty, true)
	a = p.Layer("aaaaaaaaaaaa")
	a.Start(1000)
	p.mu.Lock()
	p.last = time.Time{} // redraw on the next Add
	p.mu.Unlock()
	a.Add(500)
	out := tty.String()
	if !strings.Contains(out, "\x1b[1A") || !strings.Contains(out, "[====================>") || !strings.Contains(out, "500B/1kB") {
		t.Errorf("terminal progress: %q", out)
	}
	var nilP *Progress
	nilP.Layer("x").Status("nothing happens")
	nilP.Printf("nothing %d", 1)
}
