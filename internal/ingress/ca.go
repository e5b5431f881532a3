package ingress

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// The CA's files in Config.CADir: its certificate (what clients trust) and its key.
const (
	CAFile    = "ingress-ca.pem"
	caKeyFile = "ingress-ca.key"
)

// loadOrMakeCA returns gust's own CA from dir, making it on first start: a P-256 key and a
// self-signed certificate good for ten years, able to sign only names under base.
func loadOrMakeCA(dir, base string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, caKeyFile)
	certPEM, cerr := os.ReadFile(certPath)
	keyPEM, kerr := os.ReadFile(keyPath)
	if cerr == nil && kerr == nil {
		cert, key, err := parseCA(certPEM, keyPEM)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("ingress: the CA in %s: %w (remove %s and %s to make a new one; clients must then trust the new %s)", dir, err, certPath, keyPath, CAFile)
		}
		if len(cert.PermittedDNSDomains) > 0 && !slices.Contains(cert.PermittedDNSDomains, base) {
			return nil, nil, nil, fmt.Errorf("ingress: the CA in %s was made for %v, not the base domain %s: remove %s and %s to make a new one (clients must then trust the new %s)", dir, cert.PermittedDNSDomains, base, certPath, keyPath, CAFile)
		}
		return cert, key, certPEM, nil
	}
	if !errors.Is(cerr, os.ErrNotExist) || !errors.Is(kerr, os.ErrNotExist) {
		return nil, nil, nil, fmt.Errorf("ingress: reading the CA in %s: %w", dir, errors.Join(cerr, kerr))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ingress: making the CA's key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "gust ingress CA (" + base + ")", Organization: []string{"gust"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		// A leaked CA key must not be able to vouch for any other name.
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         []string{base},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ingress: making the CA: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ingress: encoding the CA's key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, nil, fmt.Errorf("ingress: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, nil, nil, fmt.Errorf("ingress: writing the CA's key: %w", err)
	}
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return nil, nil, nil, fmt.Errorf("ingress: writing the CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, certPEM, err
}

func parseCA(certPEM, keyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, errors.New("not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	if !cert.IsCA {
		return nil, nil, errors.New("the certificate is not a CA")
	}
	return cert, key, nil
}

// leafFor signs a certificate for base and *.base with the CA, good for a year (or less, as
// the CA's own validity allows). It is made at each start and kept in memory only.
func leafFor(ca *x509.Certificate, caKey *ecdsa.PrivateKey, base string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ingress: making the certificate's key: %w", err)
	}
	now := time.Now()
	notAfter := now.AddDate(1, 0, 0)
	if ca.NotAfter.Before(notAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "*." + base},
		DNSNames:     []string{"*." + base, base},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ingress: signing the certificate for *.%s: %w", base, err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Raw}, PrivateKey: key}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return n
}
