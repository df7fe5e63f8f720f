// Package settings resolves the node's settings in one place. A value comes
// from the first of these that has it:
//
//  1. the kernel command line, as tandem.<key>=<value>;
//  2. the settings file on the data partition (DataFile), "key = value" lines;
//  3. the board file's defaults;
//  4. the built-in default of the key.
//
// Unknown keys and invalid values are reported with their source and
// skipped, so a typo never stops a node from booting: the next source's
// value is used instead, and the problem shows on the status API.
package settings

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DataFile is where the settings file lives, relative to the data
// partition's mount point.
const DataFile = "etc/tandem.conf"

// CmdlinePrefix marks Tandem's settings among the kernel's arguments.
const CmdlinePrefix = "tandem."

// Key describes one setting.
type Key struct {
	Name    string
	Doc     string
	Default string
	Check   func(string) error
}

// The modes a network role can be brought up in.
const (
	ModeDHCP   = "dhcp"   // address from DHCP
	ModeStatic = "static" // address from net.<role>.address
	ModeLink   = "link"   // link up, IPv6 link-local only
	ModeOff    = "off"    // left down
)

// Names of the settings read by code.
const (
	KeyHostname      = "hostname"
	KeyDNS           = "net.dns"
	KeyFrontdoorPort = "frontdoor.port"
	KeyLogLevel      = "log.level"
	KeyWatchdog      = "watchdog"
	KeyWatchdogGrace = "watchdog.grace"
	KeyConsoleShell  = "console.shell"
	KeySlot          = "slot"
	KeyHeartbeat     = "cluster.heartbeat"
	KeyLeaderLease   = "cluster.lease"
	KeyResyncRate    = "storage.resync_mibps"
	// Installer mode: set on the kernel command line by the provisioning
	// node's iPXE script, never in the settings file.
	KeyMode      = "mode"
	KeyProvision = "provision"
	KeyCA        = "ca"
)

// Modes the image boots in.
const (
	ModeNode    = "node"    // a Tandem node
	ModeInstall = "install" // the installer, in RAM: no disk is touched until approved
)

// NetKey names a per-role network setting: field is mode, address or gateway.
func NetKey(role, field string) string { return "net." + role + "." + field }

// Roles whose interfaces the settings configure; they match board.Role.
var netRoles = []string{"management", "interconnect", "provisioning"}

// Keys returns every setting the firmware knows, in a stable order.
func Keys() []Key {
	keys := []Key{
		{Name: KeyHostname, Doc: "the node's name; empty: tandem-<last three bytes of the management MAC>", Check: checkHostname},
		{Name: KeyDNS, Doc: "DNS servers, comma separated (empty: from DHCP)", Check: checkIPList},
		{Name: KeyFrontdoorPort, Doc: "TCP port of the front door", Default: "443", Check: checkPort},
		{Name: KeyLogLevel, Doc: "debug, info, warn or error", Default: "info", Check: oneOf("debug", "info", "warn", "error")},
		{Name: KeyWatchdog, Doc: "pet the board's hardware watchdog: on or off", Default: "on", Check: oneOf("on", "off")},
		{Name: KeyWatchdogGrace, Doc: "how long a critical service may be down before the watchdog is left to reset the node", Default: "60s", Check: checkDuration},
		{Name: KeyConsoleShell, Doc: "recovery shell on the serial console: on or off", Default: "on", Check: oneOf("on", "off")},
		{Name: KeySlot, Doc: "system slot the boot loader started, a or b (set by GRUB; empty when PXE-booted)", Check: oneOf("", "a", "b")},
		{Name: KeyHeartbeat, Doc: "raft heartbeat timeout: a follower campaigns after 1-2x this without a leader (slow machines want more)", Default: "300ms", Check: checkDuration},
		{Name: KeyLeaderLease, Doc: "a leader without a quorum for this long steps down and drops the cluster IP (under cluster.heartbeat)", Default: "150ms", Check: checkDuration},
		{Name: KeyMode, Doc: "node, or install: the installer a provisioning node boots over the network", Default: ModeNode, Check: oneOf(ModeNode, ModeInstall)},
		{Name: KeyProvision, Doc: "installer mode: host:port of the provisioning node's front door", Check: checkHostPort},
		{Name: KeyCA, Doc: "installer mode: the cluster CA's SHA-256 fingerprint (hex), pinned", Check: checkFingerprint},
		{Name: KeyResyncRate, Doc: "MiB/s a resync may use, leaving the rest of the disks and the interconnect to the VMs; 0: no bound", Default: "200", Check: checkCount},
	}
	for _, r := range netRoles {
		keys = append(keys,
			Key{Name: NetKey(r, "mode"), Doc: "dhcp, static, link (up, link-local only) or off", Default: ModeOff, Check: oneOf(ModeDHCP, ModeStatic, ModeLink, ModeOff)},
			Key{Name: NetKey(r, "address"), Doc: "address/prefix for static mode", Check: checkPrefix},
			Key{Name: NetKey(r, "gateway"), Doc: "default gateway for static mode", Check: checkIP},
		)
	}
	return keys
}

// Value is a resolved setting and where it came from.
type Value struct {
	Value  string
	Source string
}

// Settings is the resolved set.
type Settings struct {
	values map[string]Value
	// Problems are the keys and values that were refused, each naming its
	// source; the node runs on, using the next source's value.
	Problems []error
}

// Sources are the inputs to Resolve. Any may be empty.
type Sources struct {
	Cmdline       string            // contents of /proc/cmdline
	DataFile      []byte            // contents of the settings file
	DataFilePath  string            // its path, for messages
	BoardDefaults map[string]string // the board's defaults
	BoardPath     string            // the board file's path, for messages
}

// Resolve merges the sources, highest priority first.
func Resolve(src Sources) *Settings {
	s := &Settings{values: map[string]Value{}}
	byName := map[string]Key{}
	for _, k := range Keys() {
		byName[k.Name] = k
	}
	layer := func(source string, kv []keyValue) {
		for _, e := range kv {
			k, ok := byName[e.key]
			if !ok {
				s.Problems = append(s.Problems, fmt.Errorf("%s: unknown setting %q%s", source, e.key, e.where))
				continue
			}
			if _, done := s.values[e.key]; done {
				continue // a higher-priority source already set it
			}
			if k.Check != nil {
				if err := k.Check(e.value); err != nil {
					s.Problems = append(s.Problems, fmt.Errorf("%s: setting %q%s: %w", source, e.key, e.where, err))
					continue
				}
			}
			s.values[e.key] = Value{Value: e.value, Source: source}
		}
	}

	cmd, err := parseCmdline(src.Cmdline)
	if err != nil {
		s.Problems = append(s.Problems, fmt.Errorf("kernel command line: %w", err))
	}
	layer("kernel command line", cmd)

	if len(src.DataFile) > 0 {
		kv, errs := parseFile(src.DataFile)
		for _, err := range errs {
			s.Problems = append(s.Problems, fmt.Errorf("%s: %w", src.DataFilePath, err))
		}
		layer(src.DataFilePath, kv)
	}

	var board []keyValue
	for _, k := range sortedKeys(src.BoardDefaults) {
		board = append(board, keyValue{key: k, value: src.BoardDefaults[k], where: ""})
	}
	layer(boardSource(src.BoardPath), board)

	for _, k := range Keys() {
		if _, done := s.values[k.Name]; !done {
			s.values[k.Name] = Value{Value: k.Default, Source: "built-in default"}
		}
	}
	s.checkCombinations()
	return s
}

func boardSource(path string) string {
	if path == "" {
		return "board defaults"
	}
	return path + " defaults"
}

// checkCombinations reports settings that are valid alone but not together.
func (s *Settings) checkCombinations() {
	for _, r := range netRoles {
		mode, addr := NetKey(r, "mode"), NetKey(r, "address")
		if s.Get(mode) == ModeStatic && s.Get(addr) == "" {
			s.Problems = append(s.Problems, fmt.Errorf("setting %q is static but %q is empty (mode set by %s): the interface stays down",
				mode, addr, s.values[mode].Source))
		}
	}
}

// Get returns a setting's value; use the Key* constants or NetKey so a
// misspelt key cannot compile.
func (s *Settings) Get(key string) string {
	return s.values[key].Value
}

// Lookup returns a setting with its source.
func (s *Settings) Lookup(key string) (Value, bool) {
	v, ok := s.values[key]
	return v, ok
}

// Int returns a numeric setting; its Check guarantees it parses.
func (s *Settings) Int(key string) int {
	n, _ := strconv.Atoi(s.Get(key))
	return n
}

// Duration returns a duration setting; its Check guarantees it parses.
func (s *Settings) Duration(key string) time.Duration {
	d, _ := time.ParseDuration(s.Get(key))
	return d
}

// On reports whether an on/off setting is on.
func (s *Settings) On(key string) bool { return s.Get(key) == "on" }

// All returns every setting with its source, sorted by key.
func (s *Settings) All() map[string]Value {
	out := make(map[string]Value, len(s.values))
	for k, v := range s.values {
		out[k] = v
	}
	return out
}

// CheckDefaults validates a board's defaults; the image builder calls it so
// a bad default fails the build. Errors name the key as defaults.<key>.
func CheckDefaults(defaults map[string]string) error {
	byName := map[string]Key{}
	for _, k := range Keys() {
		byName[k.Name] = k
	}
	var errs []error
	for _, name := range sortedKeys(defaults) {
		k, ok := byName[name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("defaults.%s: unknown setting", name))
		case k.Check != nil:
			if err := k.Check(defaults[name]); err != nil {
				errs = append(errs, fmt.Errorf("defaults.%s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

type keyValue struct {
	key, value string
	where      string // " (line N)" for files
}

// parseCmdline splits the kernel command line (double quotes group words,
// as the kernel does) and keeps the tandem.* arguments.
func parseCmdline(cmdline string) ([]keyValue, error) {
	var out []keyValue
	var word strings.Builder
	inQuote := false
	flush := func() {
		w := word.String()
		word.Reset()
		rest, ok := strings.CutPrefix(w, CmdlinePrefix)
		if !ok {
			return
		}
		k, v, _ := strings.Cut(rest, "=")
		out = append(out, keyValue{key: k, value: v})
	}
	for _, r := range cmdline {
		switch {
		case r == '"':
			inQuote = !inQuote
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			flush()
		default:
			word.WriteRune(r)
		}
	}
	flush()
	if inQuote {
		return out, errors.New("unbalanced double quote")
	}
	return out, nil
}

// parseFile reads "key = value" lines; # starts a comment line.
func parseFile(data []byte) ([]keyValue, []error) {
	var out []keyValue
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			errs = append(errs, fmt.Errorf("line %d: want key = value", n))
			continue
		}
		out = append(out, keyValue{key: strings.TrimSpace(k), value: strings.TrimSpace(v), where: fmt.Sprintf(" (line %d)", n)})
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	return out, errs
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func oneOf(values ...string) func(string) error {
	return func(v string) error {
		if slices.Contains(values, v) {
			return nil
		}
		return fmt.Errorf("%q: want one of %s", v, strings.Join(values, ", "))
	}
}

var hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func checkHostname(v string) error {
	if v == "" || hostnameRE.MatchString(v) {
		return nil
	}
	return fmt.Errorf("%q: want lower-case letters, digits and inner hyphens, at most 63", v)
}

func checkPort(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: want a TCP port from 1 to 65535", v)
	}
	return nil
}

func checkHostPort(v string) error {
	if v == "" {
		return nil
	}
	if _, err := netip.ParseAddrPort(v); err != nil {
		return fmt.Errorf("%q: want an IP address and port (192.0.2.1:443)", v)
	}
	return nil
}

func checkFingerprint(v string) error {
	if b, err := hex.DecodeString(v); v != "" && (err != nil || len(b) != 32) {
		return fmt.Errorf("%q: want a SHA-256 in hex (64 digits)", v)
	}
	return nil
}

func checkCount(v string) error {
	if n, err := strconv.Atoi(v); err != nil || n < 0 {
		return fmt.Errorf("%q: want a whole number, 0 or more", v)
	}
	return nil
}

func checkDuration(v string) error {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("%q: want a duration such as 30s or 2m", v)
	}
	return nil
}

func checkIP(v string) error {
	if v == "" {
		return nil
	}
	if _, err := netip.ParseAddr(v); err != nil {
		return fmt.Errorf("%q: want an IP address", v)
	}
	return nil
}

func checkIPList(v string) error {
	if v == "" {
		return nil
	}
	for _, a := range strings.Split(v, ",") {
		if err := checkIP(strings.TrimSpace(a)); err != nil {
			return err
		}
	}
	return nil
}

func checkPrefix(v string) error {
	if v == "" {
		return nil
	}
	if _, err := netip.ParsePrefix(v); err != nil {
		return fmt.Errorf("%q: want address/prefix, e.g. 192.0.2.10/24", v)
	}
	return nil
}
