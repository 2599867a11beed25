package route

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
)

// head is one HTTP/1.x message head as it came (raw, forwarded byte for byte) with the
// little of it that routing and framing need.
type head struct {
	raw []byte
	// A request's method and target; a response's status.
	method, target string
	status         int
	minor          int // HTTP/1.minor
	fields         []field
}

type field struct{ name, value string } // name in lower case, value without surrounding space

// Limits on a head: what is larger goes to the app untouched, which answers as it would.
const (
	maxHead   = 64 << 10
	maxFields = 256
)

// errNotHTTP is a message the relay cannot read as HTTP/1.x: the rest of the connection
// goes to the app as it is.
var errNotHTTP = errors.New("not an HTTP/1.x message")

// readHead reads one message head. On errNotHTTP, h.raw holds the bytes read, which the
// caller must still forward. A connection that ends before a byte of the head is io.EOF.
func readHead(br *bufio.Reader, request bool) (*head, error) {
	h := &head{}
	first := true
	for {
		line, err := readLine(br, &h.raw, request)
		if err != nil {
			return h, err // io.EOF when the connection ended before a byte of the head
		}
		if first {
			if request && len(line) == 0 && len(h.raw) <= 4 {
				h.raw = h.raw[:0] // a stray CRLF before a request is to be ignored (RFC 9112 2.2)
				continue
			}
			first = false
			if !h.parseStart(line, request) {
				return h, errNotHTTP
			}
			continue
		}
		if len(line) == 0 {
			return h, nil
		}
		if line[0] == ' ' || line[0] == '\t' || len(h.fields) >= maxFields {
			return h, errNotHTTP // obsolete line folding; or too many fields
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !isFieldName(name) {
			return h, errNotHTTP
		}
		h.fields = append(h.fields, field{strings.ToLower(string(name)), string(trimOWS(value))})
	}
}

// isFieldName reports whether b is a token, as a field name must be.
func isFieldName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// trimOWS trims the optional white space around a field value: spaces and tabs only.
func trimOWS(b []byte) []byte { return bytes.Trim(b, " \t") }

// readLine appends the next line to raw and returns it without its line end. strict (a
// request's lines, which the relay must read exactly as the app will) wants CRLF and no
// other CR: a bare LF read one way here and another way by the app is how requests are
// smuggled past a proxy.
func readLine(br *bufio.Reader, raw *[]byte, strict bool) ([]byte, error) {
	start := len(*raw)
	for {
		frag, err := br.ReadSlice('\n')
		*raw = append(*raw, frag...)
		if len(*raw) > maxHead {
			return nil, errNotHTTP
		}
		switch err {
		case nil:
			line := (*raw)[start : len(*raw)-1]
			if strict && (!bytes.HasSuffix(line, []byte("\r")) || bytes.IndexByte(line[:len(line)-1], '\r') >= 0) {
				return nil, errNotHTTP
			}
			return bytes.TrimSuffix(line, []byte("\r")), nil
		case bufio.ErrBufferFull:
			continue
		default:
			if err == io.EOF && len(*raw) > start {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

func (h *head) parseStart(line []byte, request bool) bool {
	s := string(line)
	if request {
		method, rest, ok1 := strings.Cut(s, " ")
		target, proto, ok2 := strings.Cut(rest, " ")
		if !ok1 || !ok2 || !isToken(method) || target == "" {
			return false
		}
		h.method, h.target = method, target
		return h.parseProto(proto)
	}
	proto, rest, ok := strings.Cut(s, " ")
	if !ok || !h.parseProto(proto) {
		return false
	}
	code, _, _ := strings.Cut(rest, " ")
	n, err := strconv.Atoi(code)
	if err != nil || len(code) != 3 || n < 100 {
		return false
	}
	h.status = n
	return true
}

func (h *head) parseProto(p string) bool {
	switch p {
	case "HTTP/1.1":
		h.minor = 1
	case "HTTP/1.0":
		h.minor = 0
	default:
		return false
	}
	return true
}

func isToken(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// Values are the values of the header name (lower case), a comma-separated list's members
// apart only for the fields framing reads.
func (h *head) Values(name string) []string {
	var out []string
	for _, f := range h.fields {
		if f.name == name {
			out = append(out, f.value)
		}
	}
	return out
}

// Path is the request target's path, without the query: origin-form as sent, or the path
// of an absolute-form target (a request to a proxy).
func (h *head) Path() string {
	t := h.target
	if !strings.HasPrefix(t, "/") {
		if _, rest, ok := strings.Cut(t, "://"); ok {
			t = "/"
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				t = rest[i:]
			}
		}
	}
	if i := strings.IndexAny(t, "?#"); i >= 0 {
		t = t[:i]
	}
	return t
}

// has reports whether the comma-separated header name lists token (case-insensitive).
func (h *head) has(name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// bodyKind is how a message's body is delimited.
type bodyKind int

const (
	noBody bodyKind = iota
	lengthBody
	chunkedBody
	closeBody // until the connection closes (responses only)
)

// framing reads the body's delimitation from the fields (RFC 9112 6.3); ok is false for a
// message whose length cannot be told safely (the relay then stops reading the connection
// as HTTP).
func (h *head) framing(request bool) (kind bodyKind, n int64, ok bool) {
	te := h.Values("transfer-encoding")
	cl := h.Values("content-length")
	if len(te) > 0 {
		if request && h.minor == 0 {
			return 0, 0, false // HTTP/1.0 has no transfer codings: servers disagree on what it means
		}
		if len(cl) > 0 {
			return 0, 0, false // both: a smuggling attempt, or a broken client
		}
		codings := strings.Split(strings.Join(te, ","), ",")
		if !strings.EqualFold(strings.TrimSpace(codings[len(codings)-1]), "chunked") {
			if request {
				return 0, 0, false
			}
			return closeBody, 0, true
		}
		return chunkedBody, 0, true
	}
	if len(cl) > 0 {
		v := cl[0]
		for _, o := range cl[1:] {
			if o != v {
				return 0, 0, false
			}
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || strings.ContainsAny(v, "+-") {
			return 0, 0, false
		}
		if n == 0 {
			return noBody, 0, true
		}
		return lengthBody, n, true
	}
	if request {
		return noBody, 0, true
	}
	return closeBody, 0, true
}

// closes reports whether the connection ends after this message (RFC 9112 9.3).
func (h *head) closes() bool {
	if h.has("connection", "close") {
		return true
	}
	return h.minor == 0 && !h.has("connection", "keep-alive")
}

// copyChunked copies a chunked body, trailers included, byte for byte, flushing dst after
// each chunk: a stream of chunks (server-sent events) reaches its reader as it is sent.
// tee, when not nil, gets every byte too.
func copyChunked(dst *bufio.Writer, br *bufio.Reader, strict bool, tee func([]byte)) error {
	write := func(b []byte) {
		dst.Write(b)
		if tee != nil {
			tee(b)
		}
	}
	var line []byte
	for {
		line = line[:0]
		l, err := readLine(br, &line, strict)
		if err != nil {
			return err
		}
		sizeField, _, _ := bytes.Cut(l, []byte(";"))
		size, err := strconv.ParseUint(string(trimOWS(sizeField)), 16, 63)
		if err != nil {
			return errNotHTTP
		}
		write(line)
		if size == 0 {
			for { // trailers, up to the empty line
				line = line[:0]
				l, err := readLine(br, &line, strict)
				if err != nil {
					return err
				}
				write(line)
				if len(l) == 0 {
					return dst.Flush()
				}
			}
		}
		if err := stream(dst, br, int64(size), tee); err != nil {
			return err
		}
		line = line[:0]
		if l, err := readLine(br, &line, strict); err != nil || len(l) != 0 {
			return errNotHTTP
		}
		write(line)
		if err := dst.Flush(); err != nil {
			return err
		}
	}
}
