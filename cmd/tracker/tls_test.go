package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tracklink/tracklink/internal/testkit"
)

// testPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA, as PEM files in dir.
func testPKI(t *testing.T, dir string) (ca, serverCert, serverKey, clientCert, clientKey string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tracklink test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf := func(serial int64, usage x509.ExtKeyUsage) (certDER, keyDER []byte) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "tracklink test"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kd, _ := x509.MarshalECPrivateKey(k)
		return der, kd
	}
	sc, sk := leaf(2, x509.ExtKeyUsageServerAuth)
	cc, ck := leaf(3, x509.ExtKeyUsageClientAuth)
	return write("ca.pem", "CERTIFICATE", caDER),
		write("server.pem", "CERTIFICATE", sc), write("server.key", "EC PRIVATE KEY", sk),
		write("client.pem", "CERTIFICATE", cc), write("client.key", "EC PRIVATE KEY", ck)
}

// startTLSRedis starts a redis-server that speaks only TLS and requires a
// client certificate, and returns its rediss:// URL, the directory of the
// PEM files, the CA and the client certificate and key.
func startTLSRedis(t *testing.T) (url, dir, ca, clientCert, clientKey string) {
	t.Helper()
	dir = t.TempDir()
	ca, sc, sk, cc, ck := testPKI(t, dir)
	tport, err := freeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	testkit.StartRedis(t, "--tls-port", strconv.Itoa(tport), "--tls-cert-file", sc, "--tls-key-file", sk,
		"--tls-ca-cert-file", ca, "--tls-auth-clients", "yes")
	return "rediss://127.0.0.1:" + strconv.Itoa(tport), dir, ca, cc, ck
}

// TestRedisTLS: a node reaches a Redis that speaks only TLS and requires a
// client certificate (rediss://, a private CA, a client certificate), and
// bad TLS settings stop the start with the variable's name.
func TestRedisTLS(t *testing.T) {
	url, dir, ca, cc, ck := startTLSRedis(t)
	announce := startNode(t, "TRACKER_REDIS_URL="+url, "TRACKER_NODE_ID=tls", "TRACKER_REDIS_CA_FILE="+ca,
		"TRACKER_REDIS_CERT_FILE="+cc, "TRACKER_REDIS_KEY_FILE="+ck)
	base := strings.TrimSuffix(announce, "/announce")
	announceTo(t, base, "tls-redis-torrent001", 7001, 10, "started")
	if got := scrapeOf(t, base, "tls-redis-torrent001"); got.leechers != 1 {
		t.Fatalf("scrape over TLS Redis: %+v", got)
	}

	// Without the client certificate Redis refuses the handshake: the node
	// runs, and says it is not ready.
	noCert := startNode(t, "TRACKER_REDIS_URL="+url, "TRACKER_NODE_ID=tls2", "TRACKER_REDIS_CA_FILE="+ca)
	resp, err := http.Get(strings.TrimSuffix(noCert, "/announce") + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz without a client certificate: %s", resp.Status)
	}

	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"TRACKER_REDIS_URL=" + url, "TRACKER_REDIS_CA_FILE=" + filepath.Join(dir, "missing.pem")}, "TRACKER_REDIS_CA_FILE"},
		{[]string{"TRACKER_REDIS_URL=" + url, "TRACKER_REDIS_CA_FILE=" + ck}, "holds no PEM certificate"},
		{[]string{"TRACKER_REDIS_URL=" + url, "TRACKER_REDIS_CERT_FILE=" + cc}, "go together"},
		{[]string{"TRACKER_REDIS_URL=" + url, "TRACKER_REDIS_CERT_FILE=" + cc, "TRACKER_REDIS_KEY_FILE=" + filepath.Join(dir, "server.key")}, "TRACKER_REDIS_CERT_FILE"},
		{[]string{"TRACKER_REDIS_URL=redis://127.0.0.1:1", "TRACKER_REDIS_CA_FILE=" + ca}, "use a rediss:// URL"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := runNode(ctx, append(tc.env, "TRACKER_UDP_ADDR=off", "TRACKER_HTTP_ADDR=127.0.0.1:0"), logSink, nil)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.env, err, tc.want)
		}
	}
}
