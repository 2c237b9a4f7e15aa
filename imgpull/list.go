package imgpull

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/unionfs/unionfs/layerdb"
)

// Summary is one row of `unionfs images`, with docker's column names as
// JSON keys (and a few more).
type Summary struct {
	Repository   string `json:"Repository"`
	Tag          string `json:"Tag"`
	ID           string `json:"ID"`     // short image ID: 12 hex digits of the config digest
	Digest       string `json:"Digest"` // what the name resolved to when pulled
	CreatedAt    string `json:"CreatedAt"`
	CreatedSince string `json:"CreatedSince"`
	Size         string `json:"Size"`
	SizeBytes    int64  `json:"SizeBytes"`
	Platform     string `json:"Platform"`
	Layers       int    `json:"Layers"`
	ImageID      string `json:"ImageID"` // the full config digest
}

// Summarize turns store images into rows, newest first as docker lists them.
func Summarize(imgs []layerdb.Image, now time.Time) []Summary {
	// Newest first; the store's order (by name) breaks ties.
	imgs = slices.Clone(imgs)
	slices.SortStableFunc(imgs, func(a, b layerdb.Image) int { return b.Created.Compare(a.Created) })
	out := make([]Summary, 0, len(imgs))
	for _, img := range imgs {
		tag := img.Tag
		if tag == "" {
			tag = "<none>"
		}
		id := strings.TrimPrefix(img.Config, "sha256:")
		if len(id) > 12 {
			id = id[:12]
		}
		digest := img.Digest
		if digest == "" {
			digest = img.Manifest
		}
		out = append(out, Summary{
			Repository:   FamiliarName(img.Name),
			Tag:          tag,
			ID:           id,
			Digest:       digest,
			CreatedAt:    img.Created.Format("2006-01-02 15:04:05 -0700 MST"),
			CreatedSince: HumanDuration(now.Sub(img.Created)) + " ago",
			Size:         HumanSize(img.Size),
			SizeBytes:    img.Size,
			Platform:     img.Platform,
			Layers:       len(img.Layers),
			ImageID:      img.Config,
		})
	}
	return out
}

// WriteTable writes rows as `docker images` does.
func WriteTable(w io.Writer, rows []Summary) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Repository, r.Tag, r.ID, r.CreatedSince, r.Size)
	}
	return tw.Flush()
}

// WriteJSON writes one JSON object per row and line, as
// `docker images --format json` does.
func WriteJSON(w io.Writer, rows []Summary) error {
	enc := json.NewEncoder(w)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// HumanDuration says how long d is as docker's CREATED column does.
func HumanDuration(d time.Duration) string {
	switch s := d.Seconds(); {
	case s < 1:
		return "Less than a second"
	case s == 1:
		return "1 second"
	case s < 60:
		return fmt.Sprintf("%d seconds", int(s))
	}
	switch m := d.Minutes(); {
	case m == 1:
		return "About a minute"
	case m < 60:
		return fmt.Sprintf("%d minutes", int(m))
	}
	h := int(d.Hours() + 0.5)
	switch {
	case h == 1:
		return "About an hour"
	case h < 48:
		return fmt.Sprintf("%d hours", h)
	case h < 24*7*2:
		return fmt.Sprintf("%d days", h/24)
	case h < 24*30*2:
		return fmt.Sprintf("%d weeks", h/24/7)
	case h < 24*365*2:
		return fmt.Sprintf("%d months", h/24/30)
	}
	return fmt.Sprintf("%d years", int(d.Hours())/24/365)
}
