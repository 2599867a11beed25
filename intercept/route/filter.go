// Package route decides, request by request, where the traffic of a port that filtered
// intercepts hold goes: to one of the intercepting clients, or to the app. It holds the
// filters (what a developer asks for with tp intercept --http-header/--http-path, what the
// manager checks and the agent applies) and the relay that routes each request of a
// connection on its own: HTTP/1.x, and HTTP/2 cleartext with prior knowledge (gRPC).
package route

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// IDHeader is the header whose value selects one filtered intercept by its id, whatever
// its other conditions: tp intercept prints it, so a developer can send their own requests
// to their laptop with nothing else to set.
const IDHeader = "x-tp-intercept"

// MatchKind is how a Match compares.
type MatchKind int

const (
	Exact MatchKind = iota
	Prefix
	Regex
)

var kindNames = []string{"exact", "prefix", "regex"}

// MarshalText names the kind in JSON (tp list -o json, the control socket).
func (k MatchKind) MarshalText() ([]byte, error) {
	if k < Exact || k > Regex {
		return nil, fmt.Errorf("no match kind %d", int(k))
	}
	return []byte(kindNames[k]), nil
}

func (k *MatchKind) UnmarshalText(b []byte) error {
	for i, n := range kindNames {
		if n == string(b) {
			*k = MatchKind(i)
			return nil
		}
	}
	return fmt.Errorf("no match kind %q", b)
}

// Match is one condition on a request: on a header (Name, compared case-insensitively; a
// request matches when any of the header's values does) or, with Name empty, on its path
// as sent, without the query.
type Match struct {
	Name  string    `json:"name,omitempty"`
	Value string    `json:"value"`
	Kind  MatchKind `json:"kind"`
}

// Filter selects the requests of one intercept: those that carry IDHeader: ID, and those
// that meet every condition given (at least one).
type Filter struct {
	Headers []Match `json:"headers,omitempty"`
	Path    *Match  `json:"path,omitempty"`
	ID      string  `json:"id,omitempty"`
}

// Limits on a filter: the agent runs every filter of a port on every request.
const (
	maxHeaders  = 16
	maxValueLen = 1024
)

// ParseHeader reads --http-header: NAME=VALUE matches the value exactly, NAME=~REGEX a
// value the regular expression (RE2) matches whole.
func ParseHeader(s string) (Match, error) {
	name, value, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return Match{}, fmt.Errorf("--http-header %q: want NAME=VALUE, or NAME=~REGEX for a regular expression", s)
	}
	m := Match{Name: strings.ToLower(strings.TrimSpace(name)), Value: value}
	if rest, ok := strings.CutPrefix(value, "~"); ok {
		m.Kind, m.Value = Regex, rest
	}
	return m, m.check()
}

// ParsePath reads --http-path: /PREFIX matches paths that start so, =/PATH one path
// exactly, ~REGEX a path the regular expression (RE2) matches whole.
func ParsePath(s string) (Match, error) {
	m := Match{Value: s, Kind: Prefix}
	switch {
	case strings.HasPrefix(s, "="):
		m.Kind, m.Value = Exact, s[1:]
	case strings.HasPrefix(s, "~"):
		m.Kind, m.Value = Regex, s[1:]
	}
	if m.Kind != Regex && !strings.HasPrefix(m.Value, "/") {
		return Match{}, fmt.Errorf("--http-path %q: want /PREFIX, =/EXACT-PATH or ~REGEX", s)
	}
	return m, m.check()
}

func (m Match) check() error {
	what := "path"
	if m.Name != "" {
		what = "header " + m.Name
		if !validHeaderName(m.Name) {
			return fmt.Errorf("%q is not a header name", m.Name)
		}
		if m.Kind == Prefix {
			return fmt.Errorf("header %s: only exact and regular-expression matches", m.Name)
		}
	}
	if len(m.Value) > maxValueLen {
		return fmt.Errorf("%s: a value of at most %d bytes, not %d", what, maxValueLen, len(m.Value))
	}
	if m.Kind == Regex {
		if _, err := compile(m.Value); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if m.Kind < Exact || m.Kind > Regex {
		return fmt.Errorf("%s: no match kind %d", what, m.Kind)
	}
	return nil
}

// validHeaderName reports whether name is an HTTP token in lower case.
func validHeaderName(name string) bool {
	if name == "" || len(name) > 256 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func compile(expr string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, fmt.Errorf("regular expression %q: %w", expr, err)
	}
	return re, nil
}

// Check tells what is wrong with f, for the manager to refuse it.
func (f Filter) Check() error {
	if len(f.Headers) == 0 && f.Path == nil && f.ID == "" {
		return errors.New("a filter needs a header, a path or an id")
	}
	if len(f.Headers) > maxHeaders {
		return fmt.Errorf("a filter of at most %d headers, not %d", maxHeaders, len(f.Headers))
	}
	for _, h := range f.Headers {
		if h.Name == "" {
			return errors.New("a header match without a header name")
		}
		if err := h.check(); err != nil {
			return err
		}
	}
	if f.Path != nil {
		if f.Path.Name != "" {
			return errors.New("a path match names a header")
		}
		if err := f.Path.check(); err != nil {
			return err
		}
	}
	if len(f.ID) > 64 || !validHeaderValue(f.ID) {
		return fmt.Errorf("intercept id %q: at most 64 visible characters", f.ID)
	}
	return nil
}

func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// String is the filter as tp list shows it.
func (f Filter) String() string {
	var parts []string
	for _, h := range f.Headers {
		parts = append(parts, h.String())
	}
	if f.Path != nil {
		parts = append(parts, f.Path.String())
	}
	s := strings.Join(parts, " and ")
	if f.ID != "" {
		if s != "" {
			s += ", or "
		}
		s += IDHeader + ": " + f.ID
	}
	return s
}

func (m Match) String() string {
	if m.Name == "" {
		switch m.Kind {
		case Exact:
			return "path =" + m.Value
		case Regex:
			return "path ~" + m.Value
		}
		return "path " + m.Value + "*"
	}
	if m.Kind == Regex {
		return m.Name + "=~" + m.Value
	}
	return m.Name + "=" + m.Value
}

// Proto is f as the manager's API carries it.
func (f Filter) Proto() *tunnelpb.HTTPFilter {
	p := &tunnelpb.HTTPFilter{Id: f.ID}
	for _, h := range f.Headers {
		p.Headers = append(p.Headers, h.proto())
	}
	if f.Path != nil {
		p.Path = f.Path.proto()
	}
	return p
}

func (m Match) proto() *tunnelpb.Match {
	return &tunnelpb.Match{Name: m.Name, Value: m.Value, Kind: tunnelpb.MatchKind(m.Kind)}
}

// FromProto reads a filter from the manager's API; nil for none.
func FromProto(p *tunnelpb.HTTPFilter) *Filter {
	if p == nil {
		return nil
	}
	f := &Filter{ID: p.GetId()}
	for _, h := range p.GetHeaders() {
		f.Headers = append(f.Headers, fromProto(h))
	}
	if p.GetPath() != nil {
		m := fromProto(p.GetPath())
		f.Path = &m
	}
	return f
}

func fromProto(m *tunnelpb.Match) Match {
	return Match{Name: strings.ToLower(m.GetName()), Value: m.GetValue(), Kind: MatchKind(m.GetKind())}
}

// MayOverlap reports whether a request may match both a and b, apart from their ids
// (which differ): false only when a condition of each on the same thing cannot both hold.
// Regular expressions are taken to overlap anything.
func MayOverlap(a, b Filter) bool {
	if (len(a.Headers) == 0 && a.Path == nil) || (len(b.Headers) == 0 && b.Path == nil) {
		return false // an id alone selects only that intercept's requests
	}
	for _, x := range a.Headers {
		for _, y := range b.Headers {
			if x.Name == y.Name && x.Kind == Exact && y.Kind == Exact && x.Value != y.Value {
				return false
			}
		}
	}
	if a.Path != nil && b.Path != nil && disjointPaths(*a.Path, *b.Path) {
		return false
	}
	return true
}

func disjointPaths(x, y Match) bool {
	if x.Kind == Regex || y.Kind == Regex {
		return false
	}
	if x.Kind == Exact && y.Kind == Exact {
		return x.Value != y.Value
	}
	if x.Kind == Exact {
		x, y = y, x
	}
	if y.Kind == Exact { // x a prefix
		return !strings.HasPrefix(y.Value, x.Value)
	}
	return !strings.HasPrefix(x.Value, y.Value) && !strings.HasPrefix(y.Value, x.Value)
}

// Matcher is a compiled Filter.
type Matcher struct {
	headers []matcher
	path    *matcher
	id      string
}

type matcher struct {
	name  string
	kind  MatchKind
	value string
	re    *regexp.Regexp
}

// Compile makes f ready to match requests.
func (f Filter) Compile() (*Matcher, error) {
	if err := f.Check(); err != nil {
		return nil, err
	}
	m := &Matcher{id: f.ID}
	for _, h := range f.Headers {
		c, err := h.compile()
		if err != nil {
			return nil, err
		}
		m.headers = append(m.headers, c)
	}
	if f.Path != nil {
		c, err := f.Path.compile()
		if err != nil {
			return nil, err
		}
		m.path = &c
	}
	return m, nil
}

func (m Match) compile() (matcher, error) {
	c := matcher{name: m.Name, kind: m.Kind, value: m.Value}
	if m.Kind == Regex {
		re, err := compile(m.Value)
		if err != nil {
			return matcher{}, err
		}
		c.re = re
	}
	return c, nil
}

func (c matcher) match(v string) bool {
	switch c.kind {
	case Exact:
		return v == c.value
	case Prefix:
		return strings.HasPrefix(v, c.value)
	default:
		return c.re.MatchString(v)
	}
}

// Request is what a Matcher looks at: a request's path, and its header values by
// lower-case name.
type Request interface {
	Path() string
	Values(name string) []string
}

// Match reports whether m selects r.
func (m *Matcher) Match(r Request) bool {
	if m.id != "" {
		for _, v := range r.Values(IDHeader) {
			if v == m.id {
				return true
			}
		}
	}
	if len(m.headers) == 0 && m.path == nil {
		return false
	}
	for _, h := range m.headers {
		if !slices.ContainsFunc(r.Values(h.name), h.match) {
			return false
		}
	}
	return m.path == nil || m.path.match(r.Path())
}
