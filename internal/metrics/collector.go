package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/obs-agent/obs-agent/internal/record"
)

// Prefix starts every metric name: the binary's name, obs-agent, in
// Prometheus' snake case.
const Prefix = "obs_agent_"

// Info names a traced program in obs_agent_session_info. Its fields are
// stable for a session, so each session is one series.
type Info struct {
	Session   uint64 // the store's session id
	Binary    string // path of the traced executable
	BuildID   string // the Go build id (else the GNU one), "" when absent
	GoVersion string
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(Prefix+name, help, labels, nil)
}

// The metrics; docs/metrics.md documents each, TestMetricsDocumented checks
// that the table lists every name.
var (
	descInfo = desc("session_info", "The traced program; always 1.",
		"session", "binary", "build_id", "go_version")
	descCalls = desc("calls_total", "Calls made, by outcome, from the kernel's exact counters (independent of sampling and loss).",
		"binary", "function", "package", "status")
	descDuration = desc("call_duration_seconds", "Duration of every call made, from the kernel's exact log2 histogram.",
		"binary", "function", "package")
	descRecorded = desc("calls_recorded_total", "Calls written to the store.",
		"binary", "function", "package")
	descLost = desc("calls_lost_total", "Calls made but not recorded: reason sampled (ok calls left out by --sample) or dropped (lost to pressure).",
		"binary", "function", "package", "reason")
	descErrorsLost = desc("error_records_lost_total", "Error, panic and unfinished records that could not be kept anywhere (also in calls_lost_total{reason=\"dropped\"}).",
		"binary", "function", "package")
	descRingDropped = desc("ring_dropped_total", "Records the kernel could not put in a lane's ring buffer because it was full.",
		"lane")
	descQueueDepth = desc("queue_depth_records", "Records waiting in memory for a sink, per lane.",
		"sink", "lane")
	descSinkWrite = desc("sink_write_duration_seconds", "Duration of each batch write to a sink.",
		"sink")
	descSinkRecords = desc("sink_records_total", "Records each sink wrote (outcome written) or lost (outcome dropped; error_lost counts the error records among them). Every sink keeps its own account.",
		"sink", "outcome")
	descSites      = desc("probe_sites", "Uprobe sites attached (entry and RET sites).")
	descFunctions  = desc("probed_functions", "Functions traced.")
	descPauses     = desc("breaker_pauses_total", "Times the circuit breaker paused a function's probes (each is a gap in query stats).")
	descKernelLost = desc("tracer_anomalies_total", "Kernel-side trouble: map_full (goroutine/frame map full), read_fail (unreadable goroutine), unmatched_return (a return without its entry).",
		"kind")
)

// collector reads a Source on every scrape and turns it into const
// metrics, so a scrape always shows the counters as they are now.
type collector struct {
	src Source
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInfo, descCalls, descDuration, descRecorded, descLost, descErrorsLost,
		descRingDropped, descQueueDepth, descSinkWrite, descSinkRecords, descSites, descFunctions, descPauses, descKernelLost} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	snap, err := c.src.Snapshot()
	if err != nil {
		// The scrape shows the error (promhttp answers 500 with it)
		// rather than zeros that would read as "no calls".
		ch <- prometheus.NewInvalidMetric(descCalls, err)
		return
	}
	for _, i := range snap.Sessions {
		ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1,
			strconv.FormatUint(i.Session, 10), i.Binary, i.BuildID, i.GoVersion)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for k := range snap.Functions {
		f := &snap.Functions[k]
		pkg := record.PackageOf(f.Name)
		if f.LossOnly {
			counter(descLost, f.Dropped, f.Binary, f.Name, pkg, "dropped")
			counter(descErrorsLost, f.ErrorsLost, f.Binary, f.Name, pkg)
			continue
		}
		for _, s := range []struct {
			status string
			n      uint64
		}{{"ok", f.OK}, {"error", f.Errors}, {"panic", f.Panics}, {"unfinished", f.Unfinished}} {
			counter(descCalls, s.n, f.Binary, f.Name, pkg, s.status)
		}
		buckets, count := promBuckets(&f.Hist)
		ch <- prometheus.MustNewConstHistogram(descDuration, count, float64(f.TotalNs)/1e9, buckets, f.Binary, f.Name, pkg)
		counter(descRecorded, f.Recorded, f.Binary, f.Name, pkg)
		counter(descLost, f.Sampled, f.Binary, f.Name, pkg, "sampled")
		counter(descLost, f.Dropped, f.Binary, f.Name, pkg, "dropped")
		counter(descErrorsLost, f.ErrorsLost, f.Binary, f.Name, pkg)
	}
	h := &snap.Health
	for _, r := range h.Rings {
		counter(descRingDropped, r.Dropped, r.Lane)
	}
	for _, s := range h.Sinks {
		for _, d := range s.Queue {
			gauge(descQueueDepth, float64(d.Records), s.Name, d.Lane)
		}
		counter(descSinkRecords, s.Written, s.Name, "written")
		counter(descSinkRecords, s.Dropped, s.Name, "dropped")
		counter(descSinkRecords, s.ErrorsLost, s.Name, "error_lost")
		if s.Writes != nil {
			b, sum := s.Writes.Read()
			buckets, count := promBuckets(&b)
			ch <- prometheus.MustNewConstHistogram(descSinkWrite, count, float64(sum)/1e9, buckets, s.Name)
		}
	}
	gauge(descSites, float64(h.ProbeSites))
	gauge(descFunctions, float64(h.Functions))
	counter(descPauses, h.BreakerPauses)
	counter(descKernelLost, h.MapFull, "map_full")
	counter(descKernelLost, h.ReadFail, "read_fail")
	counter(descKernelLost, h.UnmatchedReturns, "unmatched_return")
}
