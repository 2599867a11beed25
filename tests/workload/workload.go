// Package workload is the test workload the e2e suites deploy (command tests/cmd/workload):
// small servers for every protocol tp must carry, so a single pod covers HTTP, HTTPS, raw TCP
// and UDP. Tests import it for the byte pattern that GET /bytes serves.
//
// HTTP (and HTTPS, with a self-signed certificate made at start):
//
//	GET  /any/path      "pod=NAME path=/any/path\n"
//	GET  /bytes?n=N     N bytes of Pattern (application/octet-stream)
//	POST /sha256        the hex SHA-256 of the request body
//	GET  /file?path=P   the bytes of the file at P in the pod
//
// The HTTP port speaks HTTP/2 cleartext too, and answers gRPC's WhoMethod with "pod=NAME".
package workload

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// Pattern returns an endless reader of the bytes GET /bytes serves: 0, 1, ..., 250, 0, 1, ...
// (a prime period, so a shifted or dropped chunk changes the digest).
func Pattern() io.Reader { return &pattern{} }

type pattern struct{ off int }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(p.off)
		p.off++
		if p.off == 251 {
			p.off = 0
		}
	}
	return len(b), nil
}

// Handler serves the HTTP API described in the package comment; name is the pod's name.
func Handler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "workload: n must be a non-negative integer", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		_, _ = io.CopyN(w, Pattern(), n)
	})
	mux.HandleFunc("POST /sha256", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		if _, err := io.Copy(h, r.Body); err != nil {
			http.Error(w, "workload: reading body: "+err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, hex.EncodeToString(h.Sum(nil)))
	})
	// The bytes of a file in the pod, as its container sees it: tp run --as's test compares
	// the files tp writes on the laptop with these. Test workloads only.
	mux.HandleFunc("GET /file", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, "workload: "+err.Error(), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(b)
	})
	// Who connected: the address the pod sees, for tests of where connections leave from.
	mux.HandleFunc("GET /source-ip", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "source=%s\n", host)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pod-Name", name)
		fmt.Fprintf(w, "pod=%s path=%s\n", name, r.URL.Path)
	})
	return mux
}

// ServeHTTP serves Handler on addr until ctx ends; with a certificate it serves HTTPS.
func ServeHTTP(ctx context.Context, addr, name string, cert *tls.Certificate) error {
	srv := NewServer(WithGRPC("pod="+name, Handler(name)))
	srv.Addr, srv.ReadHeaderTimeout = addr, 10*time.Second
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	var err error
	if cert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
		err = srv.ListenAndServeTLS("", "")
	} else {
		err = srv.ListenAndServe()
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("http server on %s: %w", addr, err)
}

// ServeTCPEcho echoes every TCP connection on addr until ctx ends, half-close included.
func ServeTCPEcho(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("tcp echo: %w", err)
	}
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tcp echo accept: %w", err)
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
			// Pass the client's half-close back, so a client that shuts its write side sees EOF.
			_ = c.(*net.TCPConn).CloseWrite()
		}()
	}
}

// ServeUDPEcho sends every datagram on addr back to its sender until ctx ends.
func ServeUDPEcho(ctx context.Context, addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("udp echo: %w", err)
	}
	go func() { <-ctx.Done(); pc.Close() }()
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("udp echo read: %w", err)
		}
		_, _ = pc.WriteTo(buf[:n], from)
	}
}

// SelfSigned makes a throwaway ECDSA certificate for name and localhost.
func SelfSigned(name string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tls key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name, "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * 365 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("tls certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
