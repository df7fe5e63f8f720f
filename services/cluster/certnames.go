package cluster

import (
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/tandemhci/tandem/services/pki"
)

// renameCertificate issues this node's member certificate again when the
// addresses it should name changed: the node's own, and the cluster IP,
// at which browsers and tandemctl reach the console. Then a browser that
// trusts the cluster's CA (GET /api/v1/cluster/ca) checks the console at
// any of them without a warning. The key and the identity stay; any node
// holds the CA's key (it signs joins), so each renames its own.
func (a *Agent) renameCertificate() error {
	if a.id.Role != pki.RoleNode {
		return nil
	}
	cert, ca, err := a.live.Current()
	if err != nil || cert == nil || ca == nil || ca.Key == nil {
		return nil // not in a cluster (yet)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return err
		}
	}
	names, ips := certNames(a.cfg.Name, a.addresses())
	if p := a.clusterIPSetting(); p.IsValid() {
		ips = append(ips, net.IP(p.Addr().AsSlice()))
	}
	if sameIPs(leaf.IPAddresses, ips) {
		return nil
	}
	key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return errors.New("the member key is not ECDSA")
	}
	csr, err := pki.CSRFor(key, a.id, a.cfg.Name)
	if err != nil {
		return err
	}
	certPEM, err := ca.Sign(csr, a.id, a.cfg.Name, names, ips)
	if err != nil {
		return err
	}
	if err := a.files.Save(ca.PEM, certPEM, key, ca.Key); err != nil {
		return fmt.Errorf("save the renamed certificate: %w", err)
	}
	a.live.Refresh()
	a.log.Info("member certificate issued again for its addresses", "ips", fmt.Sprint(ips))
	return nil
}

func sameIPs(have []net.IP, want []net.IP) bool {
	key := func(ips []net.IP) []string {
		out := make([]string, 0, len(ips))
		for _, ip := range ips {
			out = append(out, ip.String())
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	return slices.Equal(key(have), key(want))
}
