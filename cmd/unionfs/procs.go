package main

import (
	"os"
	"runtime"
)

// setServerProcs runs the server on half the CPUs Go would use (at least
// one), unless GOMAXPROCS is set.
//
// A FUSE server answers a client that waits for every reply, so what it
// needs most is latency, not parallelism: with a P per CPU its threads
// spread over the CPUs, each request then crosses CPUs twice (an
// inter-processor wakeup each way, dear on a VM), and the runtime wakes idle
// threads to look for work. On the 2-CPU benchmark machine one P made
// serial workloads up to 35% faster (untar 7.4 s to 4.6 s) and two
// parallel clients no slower. What it costs: server-side bursts of pure Go
// work run on fewer CPUs (the `ls -lR` of 200k files, mostly garbage
// collection, took 4.4 s instead of 3.5 s). Adapting the count to the
// server's CPU use did not tell the two apart: both keep it about half busy.
func setServerProcs() {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	runtime.GOMAXPROCS(max(1, runtime.GOMAXPROCS(0)/2))
}
