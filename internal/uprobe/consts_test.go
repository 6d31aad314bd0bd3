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

// TestSizes checks that sizes the kernel would refuse are refused in
// words first, and that zero fields take the defaults.
func TestSizes(t *testing.T) {
	if err := (Sizes{}).withDefaults().check(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	for _, bad := range []Sizes{{RingOK: 3 << 20}, {RingErr: 1024}, {GoroutineSlots: 1000}} {
		if err := bad.withDefaults().check(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	ok, errs := wakeEvery(DefaultSizes)
	if ok == 0 || errs == 0 || ok*uint32(callEventSize+8) > DefaultSizes.RingOK/2 || errs*uint32(errEventSize+8) > DefaultSizes.RingErr/2 {
		t.Errorf("wake every %d ok and %d error records: want at least one, and well within each ring", ok, errs)
	}
}
