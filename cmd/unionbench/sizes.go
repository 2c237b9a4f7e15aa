package main

import "time"

// sizes are the fixture and workload dimensions of a mode.
type sizes struct {
	mode    string
	runs    int
	timeout time.Duration // per workload run; a hung server is killed after it

	statTreeFiles int // files of the Go source tree to copy; 0 means all

	layerDirs, layerDirFiles int // bottom layer: dirs x files
	layerNewFiles            int // new files in every other layer
	layerShadowFiles         int // bottom files every other layer shadows
	layerCounts              []int

	bigBytes    int64 // the lower file of seqread and copyup
	untarFiles  int
	rmTreeFiles int
	mountLayers int
	smallWrites int

	memDirs, memDirFiles int // the tree listed by the memory workload
}

var fullSizes = sizes{
	mode: "full", runs: 3, timeout: 15 * time.Minute,
	statTreeFiles: 0,
	layerDirs:     200, layerDirFiles: 50, layerNewFiles: 100, layerShadowFiles: 5,
	layerCounts: []int{1, 16, 64, 128},
	bigBytes:    1 << 30,
	untarFiles:  11000,
	rmTreeFiles: 3500,
	mountLayers: 64,
	smallWrites: 2000,
	memDirs:     400, memDirFiles: 500,
}

var quickSizes = sizes{
	mode: "quick", runs: 3, timeout: 3 * time.Minute,
	statTreeFiles: 2000,
	layerDirs:     50, layerDirFiles: 40, layerNewFiles: 100, layerShadowFiles: 5,
	layerCounts: []int{1, 16},
	bigBytes:    64 << 20,
	untarFiles:  1000,
	rmTreeFiles: 500,
	mountLayers: 16,
	smallWrites: 200,
	memDirs:     100, memDirFiles: 200,
}

// layersNeeded is how many layer directories the fixtures must hold.
func (s sizes) layersNeeded() int {
	n := s.mountLayers
	for _, c := range s.layerCounts {
		n = max(n, c)
	}
	return n
}
