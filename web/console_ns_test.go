package web_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/services/cluster/clustertest"
	"github.com/tandemhci/tandem/services/nstest"
)

// TestConsoleInBrowser runs the console's browser test (e2e/console.test.js:
// playwright-core driving Debian's chromium) against a real cluster in
// namespaces with the test guest, from the client host: log in, create
// and start the test VM, see its prompt on the serial console, switch FT
// on until protected, put a node into maintenance, switch the language,
// lose the leader's node (the page reconnects by itself), log out.
// Screenshots go to $TANDEM_ARTIFACTS/console (default: the checkout's
// build folder).
//
// TANDEM_CONSOLE_HOLD=FILE keeps the cluster up after setting it up,
// writes to FILE how to reach it (the client namespace and the
// environment the script needs), and waits until FILE is removed: for
// working on the browser test.
func TestConsoleInBrowser(t *testing.T) {
	node, chromium := browserTools(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	c := clustertest.New(t, clustertest.Options{Storage: true, VMs: true, BootDir: clustertest.TestGuest(t), QEMU: clustertest.TandemQEMU(t), APITimeout: 30 * time.Second})
	c.Form()
	c.WaitHealthy(30 * time.Second)

	spki := nodeKeys(t, c)
	shots := filepath.Join(artifacts(t, root), "console")
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	home, signals := t.TempDir(), t.TempDir()
	env := []string{
		"HOME=" + home,
		"PATH=" + os.Getenv("PATH"),
		"CHROMIUM=" + chromium,
		"TANDEM_URL=https://" + clustertest.ClusterIP,
		"TANDEM_HOST=" + clustertest.ClusterIP,
		"TANDEM_USER=" + c.Admin,
		"TANDEM_PASSWORD=" + c.Password,
		"TANDEM_SPKI=" + strings.Join(spki, ","),
		"TANDEM_SHOTS=" + shots,
		"TANDEM_GUEST_IP=" + clustertest.Subnet + "200",
		"TANDEM_NODES=" + c.A.Name + "," + c.B.Name,
		"TANDEM_SIGNALS=" + signals,
	}
	script := filepath.Join(root, "web", "e2e", "console.test.js")
	if hold := os.Getenv("TANDEM_CONSOLE_HOLD"); hold != "" {
		holdOpen(t, hold, c.ClientNS.Name, env, node, script)
		return
	}
	cmd := c.ClientNS.Command(node, "--test", "--test-reporter=spec", "--test-timeout=600000", script)
	cmd.Env = env
	cmd.Dir = filepath.Join(root, "web", "e2e")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		t.Log(line)
		log.WriteString(line + "\n")
		// The script asks for the leader's node to be lost (powered off:
		// its processes killed, its links down), and goes on once it is.
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "KILL_LEADER "); ok {
			for _, m := range []*clustertest.Member{c.A, c.B} {
				if m.Name == name {
					m.PowerOff()
				}
			}
			if err := os.WriteFile(filepath.Join(signals, "leader-killed"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the browser test failed (%v); screenshots in %s\nnode-a:\n%s\nnode-b:\n%s", err, shots, tail(c.A.Log()), tail(c.B.Log()))
	}
	t.Logf("screenshots in %s", shots)
}

// browserTools finds node and chromium and makes sure playwright-core is
// installed in e2e/ (npm ci, from the lock file).
func browserTools(t *testing.T) (node, chromium string) {
	t.Helper()
	nstest.Require(t)
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed (Node.js 20 or later; make deps)")
	}
	chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Fatal("Debian's chromium is not installed (make deps)")
	}
	if _, err := os.Stat("e2e/node_modules/playwright-core/package.json"); err != nil {
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = "e2e"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in web/e2e: %v\n%s", err, out)
		}
	}
	return node, chromium
}

// nodeKeys are the nodes' TLS keys as chromium's
// --ignore-certificate-errors-spki-list takes them: the cluster IP moves
// between the nodes, and the browser accepts exactly their two keys.
func nodeKeys(t *testing.T, c *clustertest.Cluster) []string {
	var spki []string
	for _, m := range []*clustertest.Member{c.A, c.B} {
		h, err := leafSPKI(c.ClientNS, m.IP+":443")
		if err != nil {
			t.Fatal(err)
		}
		spki = append(spki, h)
	}
	return spki
}

// leafSPKI is what chromium's --ignore-certificate-errors-spki-list
// takes: the base64 SHA-256 of the server key's SubjectPublicKeyInfo.
func leafSPKI(ns *nstest.NS, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := ns.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	conn := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	defer conn.Close()
	if err := conn.HandshakeContext(ctx); err != nil {
		return "", fmt.Errorf("TLS to %s: %w", addr, err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:]), nil
}

// artifacts is where a test keeps what it leaves for people to look at.
func artifacts(t *testing.T, root string) string {
	if dir := os.Getenv("TANDEM_ARTIFACTS"); dir != "" {
		return dir
	}
	dir, err := clustertest.BuildDir(root)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "artifacts")
}

// holdOpen writes how to run the browser test against this cluster, and
// waits until the file is removed.
func holdOpen(t *testing.T, file, ns string, env []string, node, script string) {
	var b strings.Builder
	fmt.Fprintf(&b, "# the cluster is up; remove this file to end the test\n")
	for _, e := range env {
		fmt.Fprintf(&b, "export %q\n", e)
	}
	fmt.Fprintf(&b, "cd %s && ip netns exec %s %s --test --test-reporter=spec %s\n", filepath.Dir(script), ns, node, script)
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("holding: see %s", file)
	for {
		if _, err := os.Stat(file); err != nil {
			return
		}
		time.Sleep(time.Second)
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}
