package uprobe

import (
	"testing"
	"unsafe"
)

func TestDecodeRejectsShortRecords(t *testing.T) {
	var ev Event
	if err := decode(make([]byte, callEventSize-1), false, &ev); err == nil {
		t.Fatal("a short ok record decoded")
	}
	if err := decode(make([]byte, callEventSize), true, &ev); err == nil {
		t.Fatal("an ok-sized record decoded as an error record")
	}
}

func TestDecodeErrEvent(t *testing.T) {
	var e obsErrEvent
	e.Call.Id, e.Call.ParentId, e.Call.Goid = 7, 3, 42
	e.Call.StartNs, e.Call.EndNs = 100, 250
	e.Call.Tgid, e.Call.FuncId, e.Call.Status = 9, 2, 1
	e.TypeAddr, e.Kind, e.Truncated = 0x1234, 1, 1
	msg := "boom"
	for i := range msg {
		e.Text[i] = int8(msg[i])
	}
	e.TextLen = uint16(len(msg))
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&e)), errEventSize)
	var ev Event
	if err := decode(raw, true, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.ID != 7 || ev.ParentID != 3 || ev.GoID != 42 || ev.EndMono-ev.StartMono != 150 ||
		ev.PID != 9 || ev.FuncID != 2 || ev.Status != 1 || ev.TypeAddr != 0x1234 ||
		!ev.PanicValue || !ev.Truncated || string(ev.Text) != "boom" {
		t.Fatalf("decoded %+v", ev)
	}
	e.TextLen = 60000 // corrupt length: clamped to the buffer
	if err := decode(raw, true, &ev); err != nil || len(ev.Text) != len(e.Text) {
		t.Fatalf("corrupt length: %v, %d bytes", err, len(ev.Text))
	}
}

func TestFuncInfoSampling(t *testing.T) {
	if fi := funcInfo(Func{SampleRate: 1}); fi.SampleAll != 1 {
		t.Fatalf("rate 1: %+v", fi)
	}
	if fi := funcInfo(Func{SampleRate: 0}); fi.SampleAll != 0 || fi.SampleThresh != 0 {
		t.Fatalf("rate 0 must keep nothing: %+v", fi)
	}
	fi := funcInfo(Func{SampleRate: 0.25})
	if fi.SampleAll != 0 || fi.SampleThresh != 1<<30 {
		t.Fatalf("rate 0.25: %+v", fi)
	}
	fi = funcInfo(Func{Err: ErrorLoc{Mode: 2, StackOff: 24}})
	if fi.ErrMode != 2 || fi.StackOff != 24 {
		t.Fatalf("error location not passed: %+v", fi)
	}
}
