// Command netcheck is a test client that ignores proxies and resolves names itself (built
// static, with Go's own resolver reading /etc/resolv.conf), like the programs tp run's VIF
// exists for. Each argument group is one check; it prints one line per check and exits 1
// at the first failure.
//
//	netcheck get URL              HTTP GET, prints the body
//	netcheck resolve NAME         prints the addresses
//	netcheck srv SERVICE PROTO NAME   prints target:port of each SRV record
//	netcheck udp HOST:PORT MSG    sends one datagram, prints the answer
//	netcheck tcp HOST:PORT N      sends N bytes, half-closes, checks the echo
//	netcheck refused HOST:PORT    expects the connection to be refused (not reset after)
//	netcheck serve PORT SECONDS   serves HTTP on 0.0.0.0:PORT ("served <path>") that long; prints $POD_NAME first
//	netcheck bulk URL             one GET, prints MB/s of its body
//	netcheck requests URL N       N GETs on new connections, prints each one's microseconds
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"time"
)

func main() {
	args := os.Args[1:]
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: netcheck get URL | resolve NAME | srv SVC PROTO NAME | udp ADDR MSG | tcp ADDR N | refused ADDR")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := check(ctx, args); err != nil {
		fmt.Fprintln(os.Stderr, "netcheck:", err)
		os.Exit(1)
	}
}

func check(ctx context.Context, args []string) error {
	r := &net.Resolver{PreferGo: true}
	d := &net.Dialer{Resolver: r, Timeout: 10 * time.Second}
	switch args[0] {
	case "get":
		c := &http.Client{Transport: &http.Transport{Proxy: nil, DialContext: d.DialContext}, Timeout: 20 * time.Second}
		resp, err := c.Get(args[1])
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		fmt.Print(string(body))
	case "resolve":
		addrs, err := r.LookupHost(ctx, args[1])
		if err != nil {
			return err
		}
		fmt.Println(addrs)
	case "srv":
		_, srvs, err := r.LookupSRV(ctx, args[1], args[2], args[3])
		if err != nil {
			return err
		}
		for _, s := range srvs {
			fmt.Printf("%s:%d\n", s.Target, s.Port)
		}
	case "udp":
		c, err := d.DialContext(ctx, "udp", args[1])
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 65535)
		for try := 0; ; try++ {
			if _, err := c.Write([]byte(args[2])); err != nil {
				return err
			}
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := c.Read(buf)
			if err == nil {
				fmt.Println(string(buf[:n]))
				return nil
			}
			if try == 4 {
				return err
			}
		}
	case "tcp":
		n, _ := strconv.Atoi(args[2])
		c, err := d.DialContext(ctx, "tcp", args[1])
		if err != nil {
			return err
		}
		defer c.Close()
		sent := make([]byte, n)
		_, _ = rand.Read(sent)
		go func() {
			_, _ = c.Write(sent)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		got, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, sent) {
			return fmt.Errorf("echo: %d bytes back of %d sent, equal %v", len(got), n, bytes.Equal(got, sent))
		}
		fmt.Printf("echoed %d bytes\n", n)
	case "refused":
		c, err := d.DialContext(ctx, "tcp", args[1])
		if err == nil {
			c.Close()
			return fmt.Errorf("connected to %s; want a refusal", args[1])
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("dial %s: %v; want connection refused", args[1], err)
		}
		fmt.Println("refused")
	case "serve":
		secs, _ := strconv.Atoi(args[2])
		fmt.Printf("POD_NAME=%s\n", os.Getenv("POD_NAME"))
		ln, err := net.Listen("tcp", ":"+args[1])
		if err != nil {
			return err
		}
		go func() {
			_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "served %s\n", r.URL.Path)
			}))
		}()
		time.Sleep(time.Duration(secs) * time.Second)
	case "bulk":
		c := &http.Client{Transport: &http.Transport{Proxy: nil, DialContext: d.DialContext, DisableCompression: true}}
		start := time.Now()
		resp, err := c.Get(args[1])
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		n, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, 256<<10))
		if err != nil {
			return err
		}
		fmt.Printf("%.1f\n", float64(n)/time.Since(start).Seconds()/1e6)
	case "requests":
		n, _ := strconv.Atoi(args[2])
		c := &http.Client{Transport: &http.Transport{Proxy: nil, DialContext: d.DialContext, DisableKeepAlives: true}}
		for i := range n {
			start := time.Now()
			resp, err := c.Get(fmt.Sprintf("%s/%d", args[1], i))
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			fmt.Println(time.Since(start).Microseconds())
		}
	default:
		return fmt.Errorf("unknown check %q", args[0])
	}
	return nil
}
