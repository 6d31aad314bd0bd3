package uprobe

import (
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
)

// TestSharedConstants checks that the constants bpf/obs.h exports (through
// bpf2go) agree with the Go packages that store what the programs send.
func TestSharedConstants(t *testing.T) {
	for _, c := range []struct {
		bpf obsObsStatus
		rec record.Status
	}{
		{obsObsStatusOBS_OK, record.StatusOK},
		{obsObsStatusOBS_ERROR, record.StatusError},
		{obsObsStatusOBS_PANIC, record.StatusPanic},
		{obsObsStatusOBS_UNFINISHED, record.StatusUnfinished},
	} {
		if uint8(c.bpf) != uint8(c.rec) {
			t.Errorf("status %v is %d in bpf/obs.h but %d in internal/record", c.rec, c.bpf, c.rec)
		}
	}
	if int(obsObsLimitsOBS_HIST_BUCKETS) != record.HistBuckets {
		t.Errorf("bpf/obs.h has %d histogram buckets, internal/record %d", obsObsLimitsOBS_HIST_BUCKETS, record.HistBuckets)
	}
	if n := len(obsErrEvent{}.Text); n != int(obsObsLimitsOBS_TEXT_MAX) {
		t.Errorf("err_event text is %d bytes, OBS_TEXT_MAX %d", n, obsObsLimitsOBS_TEXT_MAX)
	}
}
