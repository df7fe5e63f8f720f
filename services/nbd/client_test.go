package nbd

import (
	"context"
	"slices"
	"testing"
)

func TestListExports(t *testing.T) {
	sock := serve(t, Export{Name: "disk-1", Backend: &memDisk{data: make([]byte, 1<<20)}})
	names, err := ListExports(context.Background(), "unix", sock)
	if err != nil || !slices.Equal(names, []string{"disk-1"}) {
		t.Fatalf("exports %q, %v", names, err)
	}
	if _, err := ListExports(context.Background(), "unix", sock+".nope"); err == nil {
		t.Error("no server, no error")
	}
}
