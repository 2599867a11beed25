package route

import (
	"fmt"

	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Route is one filtered intercept of a port: requests its Matcher selects go to it.
type Route struct {
	ID    string
	Match *Matcher
}

// Table is a port's routes in the manager's order: the first that matches a request takes
// it, and a request none matches goes to the app.
type Table []Route

// Pick is the id of the route r goes to; "" for the app.
func (t Table) Pick(r Request) string {
	for _, rt := range t {
		if rt.Match.Match(r) {
			return rt.ID
		}
	}
	return ""
}

// TableFromProto compiles the routes the manager sent for one port.
func TableFromProto(p *tunnelpb.PortRoutes) (Table, error) {
	t := make(Table, 0, len(p.GetRoutes()))
	for _, r := range p.GetRoutes() {
		f := FromProto(r.GetHttp())
		if f == nil || r.GetId() == "" {
			return nil, fmt.Errorf("port %s: a route without an id or a filter", p.GetPort())
		}
		m, err := f.Compile()
		if err != nil {
			return nil, fmt.Errorf("port %s, route %s: %w", p.GetPort(), r.GetId(), err)
		}
		t = append(t, Route{ID: r.GetId(), Match: m})
	}
	return t, nil
}
