package qemu

import (
	"context"
	"testing"
)

func TestFallBackWins(t *testing.T) {
	var p Prober
	p.FallBack("KVM failed")
	if a := p.Get(context.Background()); a.KVM || a.Reason != "KVM failed" {
		t.Fatalf("after a fallback: %+v", a)
	}
	if a := (Accelerator{}); a.Name() != "tcg" || a.Args()[1] != "tcg,thread=multi" {
		t.Fatalf("TCG arguments %v", a.Args())
	}
}
