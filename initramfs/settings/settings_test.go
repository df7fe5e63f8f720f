package settings

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestResolvePriority(t *testing.T) {
	tests := []struct {
		name string
		src  Sources
		key  string
		want Value
	}{
		{
			name: "built-in default",
			key:  KeyFrontdoorPort,
			want: Value{"443", "built-in default"},
		},
		{
			name: "board beats built-in",
			src:  Sources{BoardDefaults: map[string]string{"net.management.mode": "dhcp"}, BoardPath: "board.yaml"},
			key:  NetKey("management", "mode"),
			want: Value{"dhcp", "board.yaml defaults"},
		},
		{
			name: "data file beats board",
			src: Sources{
				DataFile: []byte("# comment\n\nnet.management.mode = static\nnet.management.address = 10.0.0.5/24\n"), DataFilePath: "/data/etc/tandem.conf",
				BoardDefaults: map[string]string{"net.management.mode": "dhcp"},
			},
			key:  NetKey("management", "mode"),
			want: Value{"static", "/data/etc/tandem.conf"},
		},
		{
			name: "command line beats data file",
			src: Sources{
				Cmdline:  `BOOT_IMAGE=/vmlinuz console=ttyS0 tandem.hostname=node-a quiet`,
				DataFile: []byte("hostname = node-b\n"), DataFilePath: "f",
			},
			key:  KeyHostname,
			want: Value{"node-a", "kernel command line"},
		},
		{
			name: "quoted command line value",
			src:  Sources{Cmdline: `tandem.net.dns="192.0.2.1,192.0.2.2" x`},
			key:  KeyDNS,
			want: Value{"192.0.2.1,192.0.2.2", "kernel command line"},
		},
		{
			name: "invalid value falls through to the next source",
			src:  Sources{Cmdline: "tandem.frontdoor.port=99999", DataFile: []byte("frontdoor.port = 8443"), DataFilePath: "f"},
			key:  KeyFrontdoorPort,
			want: Value{"8443", "f"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Resolve(tt.src)
			got, _ := s.Lookup(tt.key)
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("%s (-want +got):\n%s", tt.key, d)
			}
		})
	}
}

func TestResolveProblemsNameSourceAndKey(t *testing.T) {
	tests := []struct {
		name string
		src  Sources
		want []string
	}{
		{"unknown command line key", Sources{Cmdline: "tandem.colour=blue"}, []string{`kernel command line: unknown setting "colour"`}},
		{"unknown file key with line", Sources{DataFile: []byte("\n\ncolour = blue\n"), DataFilePath: "/data/etc/tandem.conf"},
			[]string{`/data/etc/tandem.conf: unknown setting "colour" (line 3)`}},
		{"line without =", Sources{DataFile: []byte("hostname\n"), DataFilePath: "f"}, []string{"f: line 1: want key = value"}},
		{"bad value", Sources{Cmdline: "tandem.log.level=loud"}, []string{`kernel command line: setting "log.level": "loud": want one of`}},
		{"unbalanced quote", Sources{Cmdline: `tandem.hostname="a`}, []string{"kernel command line: unbalanced double quote"}},
		{"bad board default", Sources{BoardDefaults: map[string]string{"watchdog": "maybe"}, BoardPath: "b.yaml"},
			[]string{`b.yaml defaults: setting "watchdog": "maybe"`}},
		{"static without address", Sources{Cmdline: "tandem.net.interconnect.mode=static"},
			[]string{`setting "net.interconnect.mode" is static but "net.interconnect.address" is empty (mode set by kernel command line)`}},
		{"bad hostname", Sources{Cmdline: "tandem.hostname=Node_A"}, []string{`setting "hostname": "Node_A"`}},
		{"bad address", Sources{Cmdline: "tandem.net.management.address=10.0.0.5"}, []string{"want address/prefix"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Resolve(tt.src)
			var got []string
			for _, p := range s.Problems {
				got = append(got, p.Error())
			}
			if len(got) != len(tt.want) {
				t.Fatalf("problems %q, want %d", got, len(tt.want))
			}
			for i := range got {
				if !strings.Contains(got[i], tt.want[i]) {
					t.Errorf("problem %q does not contain %q", got[i], tt.want[i])
				}
			}
		})
	}
}

func TestEveryKeyHasADefaultThatPassesItsCheck(t *testing.T) {
	s := Resolve(Sources{})
	if len(s.Problems) != 0 {
		t.Fatalf("built-in defaults have problems: %v", s.Problems)
	}
	for _, k := range Keys() {
		if k.Doc == "" {
			t.Errorf("%s has no doc", k.Name)
		}
		if _, ok := s.Lookup(k.Name); !ok {
			t.Errorf("%s not resolved", k.Name)
		}
	}
	if s.Int(KeyFrontdoorPort) != 443 || s.Duration(KeyWatchdogGrace) != time.Minute || !s.On(KeyWatchdog) {
		t.Errorf("typed accessors: %d %v %v", s.Int(KeyFrontdoorPort), s.Duration(KeyWatchdogGrace), s.On(KeyWatchdog))
	}
}

func TestCheckDefaults(t *testing.T) {
	if err := CheckDefaults(map[string]string{"net.management.mode": "dhcp", "frontdoor.port": "443"}); err != nil {
		t.Errorf("good defaults: %v", err)
	}
	err := CheckDefaults(map[string]string{"net.mgmt.mode": "dhcp", "frontdoor.port": "0"})
	for _, want := range []string{"defaults.net.mgmt.mode: unknown setting", "defaults.frontdoor.port:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not contain %q", err, want)
		}
	}
}

func FuzzResolve(f *testing.F) {
	f.Add(`tandem.hostname=a "tandem.net.dns=1.2.3.4" x=y`, "hostname = b\n# c\nbad line\n")
	f.Fuzz(func(t *testing.T, cmdline, file string) {
		s := Resolve(Sources{Cmdline: cmdline, DataFile: []byte(file), DataFilePath: "f"})
		// Whatever the input, every key resolves to a value its check accepts.
		for _, k := range Keys() {
			v, ok := s.Lookup(k.Name)
			if !ok {
				t.Fatalf("%s unresolved", k.Name)
			}
			if k.Check != nil && v.Value != k.Default {
				if err := k.Check(v.Value); err != nil {
					t.Fatal(fmt.Errorf("%s=%q from %s passed Resolve but fails its check: %w", k.Name, v.Value, v.Source, err))
				}
			}
		}
	})
}
