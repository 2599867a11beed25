package workload

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler("pod-1"))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/some/path")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "pod=pod-1 path=/some/path\n" || resp.Header.Get("X-Pod-Name") != "pod-1" {
		t.Fatalf("GET /some/path: %q %v", body, resp.Header)
	}

	resp, err = http.Get(srv.URL + "/bytes?n=1000")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	want := make([]byte, 1000)
	_, _ = Pattern().Read(want)
	if !bytes.Equal(body, want) || body[251] != 0 || body[250] != 250 {
		t.Fatalf("GET /bytes: %d bytes, pattern match %v", len(body), bytes.Equal(body, want))
	}

	resp, _ = http.Get(srv.URL + "/bytes?n=-1")
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("GET /bytes?n=-1: %s, want 400", resp.Status)
	}
	resp.Body.Close()

	payload := strings.Repeat("abc", 10000)
	resp, err = http.Post(srv.URL+"/sha256", "text/plain", strings.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	sum := sha256.Sum256([]byte(payload))
	if strings.TrimSpace(string(body)) != hex.EncodeToString(sum[:]) {
		t.Fatalf("POST /sha256: %q", body)
	}
}

func TestPatternContinuesAcrossReads(t *testing.T) {
	p := Pattern()
	a := make([]byte, 300)
	_, _ = p.Read(a[:100])
	_, _ = p.Read(a[100:])
	b := make([]byte, 300)
	_, _ = Pattern().Read(b)
	if !bytes.Equal(a, b) {
		t.Fatal("pattern depends on how it is read")
	}
}
