package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"time"
)

// tlsAlone measures TLS by itself on this machine, for `gust bench tunnel`: a Go TLS server
// sends mib MiB to a Go TLS client over loopback in this process, writing the records of each
// 256 KiB in one system call as the ingress does. It is the HTTPS tunnel's ceiling: there the
// ingress encrypts and the client decrypts on the same cores, besides the relay.
func tlsAlone(mib int) func() (float64, error) {
	return func() (float64, error) {
		cert, err := benchCert()
		if err != nil {
			return 0, err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer ln.Close()
		served := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				served <- err
				return
			}
			defer c.Close()
			hc := &heldConn{Conn: c}
			tc := tls.Server(hc, &tls.Config{Certificates: []tls.Certificate{cert}})
			if err := tc.Handshake(); err != nil {
				served <- err
				return
			}
			buf := make([]byte, 256<<10)
			for sent := 0; sent < mib<<20; sent += len(buf) {
				hc.held = true
				if _, err := tc.Write(buf); err != nil {
					served <- err
					return
				}
				hc.held = false
				if _, err := c.Write(hc.buf); err != nil {
					served <- err
					return
				}
				hc.buf = hc.buf[:0]
			}
			served <- nil
		}()
		start := time.Now()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true}) // its own certificate, just made
		if err != nil {
			return 0, err
		}
		defer c.Close()
		n, err := io.CopyBuffer(discard{}, io.LimitReader(c, int64(mib)<<20), make([]byte, readBuf))
		if err == nil && n < int64(mib)<<20 {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return 0, fmt.Errorf("TLS alone, after %d bytes: %w", n, err)
		}
		rate := float64(n) / time.Since(start).Seconds()
		return rate, <-served
	}
}

// heldConn gathers what is written while held (the TLS records of one Write).
type heldConn struct {
	net.Conn
	held bool
	buf  []byte
}

func (h *heldConn) Write(p []byte) (int, error) {
	if h.held {
		h.buf = append(h.buf, p...)
		return len(p), nil
	}
	return h.Conn.Write(p)
}

// benchCert is a self-signed certificate for tlsAlone.
func benchCert() (tls.Certificate, error) {
	certPEM, keyPEM, err := benchCertPEM()
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
}

// benchCertPEM is a self-signed certificate and its key, PEM-encoded: for tlsAlone, and for
// the bench's sandbox serving HTTPS itself.
func benchCertPEM() (certPEM, keyPEM string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"bench"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k})), nil
}
