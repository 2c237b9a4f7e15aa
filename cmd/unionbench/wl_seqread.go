package main

import "fmt"

// seqRead (workload 3): dd of a big lower file, warm and cold.
type seqRead struct{ mountedWorkload }

func (*seqRead) name() string { return "seqread" }

func (w *seqRead) metrics() []metric {
	size := fmtSize(w.h.fx.bigSize)
	return []metric{
		{key: "seqread/warm", short: "warm", kind: throughput, target: ">= 0.9",
			label: fmt.Sprintf("seqread: `dd bs=1M` of a %s lower file, warm", size)},
		{key: "seqread/cold", short: "cold", kind: throughput,
			label: "seqread: cold"},
	}
}

func (w *seqRead) setup(b backend) error {
	return w.mountStack(b, stack{lowers: []string{w.h.fx.bigDir}})
}

func (w *seqRead) run() (values, error) {
	v := values{}
	dd := func() (float64, error) {
		d, err := command(w.h.ctx, "", nil, "dd", "if="+w.path("big"), "of=/dev/null", "bs=1M")
		return float64(w.h.fx.bigSize) / (1 << 20) / d.Seconds(), err
	}
	if _, err := dd(); err != nil { // warm the caches
		return v, err
	}
	x, err := dd()
	if err != nil {
		return v, err
	}
	v["seqread/warm"] = x
	if err := dropCaches(3); err != nil {
		return v, err
	}
	if x, err = dd(); err != nil {
		return v, err
	}
	v["seqread/cold"] = x
	return v, nil
}

func fmtSize(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}
