package manager

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/remote/grant"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// A port's intercepts: one global intercept, which takes every connection and so holds the
// port alone, or any number of filtered ones (many developers on one port, each taking the
// HTTP requests their filter matches). Agents route each request to the first filtered
// intercept, in order of creation, whose filter matches it. Wiretaps stand beside any of
// them: they take nothing, they get copies.

// createLocked makes, or asserts again, the intercept req names for client c.
// remote are the port's intercepts on the manager's other pods (their claims).
func (r *Registry) createLocked(c *clientSession, req *tunnelpb.InterceptRequest, holder string, authErr error, remote []*intercept) *tunnelpb.InterceptResult {
	if req.GetClient() != "" {
		c.who = req.GetClient()
	}
	res := &tunnelpb.InterceptResult{Name: req.GetName(), Holder: holder}
	key := interceptKeyOf(req)
	filter := route.FromProto(req.GetHttp())
	if authErr == nil {
		r.takeOverLocked(c, req, key)
	}
	if res.Error = r.refusalLocked(c, req, key, filter, holder, authErr, remote); res.Error != "" {
		return res
	}
	it, changed := r.placeLocked(c, req, key, filter, holder)
	if changed {
		r.notifyLocked(key)
	}
	res.Agents = int32(r.agentsLocked(key))
	res.Problem = it.problem
	res.Overlap = r.overlapLocked(it)
	r.log.Info("intercept", "name", it.name, "workload", key, "filter", describeFilter(it.filter), "holder", holder, "client", c.who)
	if res.Overlap != "" && changed {
		r.log.Info("intercepts overlap", "name", it.name, "workload", key, "client", c.who, "overlap", res.Overlap)
	}
	return res
}

func interceptKeyOf(req *tunnelpb.InterceptRequest) interceptKey {
	return interceptKey{req.GetNamespace(), strings.ToLower(req.GetKind()), req.GetWorkload(), req.GetPort()}
}

// takeOverLocked ends the intercept of the same name another session of this pod holds with
// the grant req presents: the grant's secret proves the same client, which asserts its intercept on a new
// stream before the manager has noticed that its old one broke (a cut port-forward keeps
// the pod's end open until keepalive says otherwise).
func (r *Registry) takeOverLocked(c *clientSession, req *tunnelpb.InterceptRequest, key interceptKey) {
	if req.GetGrant() == "" {
		return
	}
	hash := grant.Hash(req.GetSecret())
	for _, it := range slices.Clone(r.byKey[key]) {
		if it.client != c && it.name == req.GetName() && it.grant == req.GetGrant() && it.grantHash == hash {
			r.removeLocked(it)
			r.log.Info("intercept taken over by its client's new session", "name", it.name, "client", c.who)
		}
	}
}

// refusalLocked is why the intercept req names cannot be made ("" when it can).
func (r *Registry) refusalLocked(c *clientSession, req *tunnelpb.InterceptRequest, key interceptKey, filter *route.Filter, holder string, authErr error, remote []*intercept) string {
	name := req.GetName()
	switch {
	case name == "" || key.namespace == "" || key.workload == "" || key.port == "":
		return "an intercept needs a name, namespace, workload and port"
	case authErr != nil:
		r.log.Warn("intercept refused", "name", name, "workload", key, "client", c.who, "err", authErr)
		return authErr.Error()
	}
	if filter != nil {
		if err := filter.Check(); err != nil {
			return fmt.Sprintf("intercept %q: its HTTP filter: %v", name, err)
		}
	}
	others := append(r.othersLocked(key, c, name), remote...)
	if !req.GetWiretap() {
		if msg := conflict(req.GetKind(), key, filter, takers(others)); msg != "" {
			return msg
		}
	}
	if msg := idTaken(name, key, filter, others); msg != "" {
		return msg
	}
	if r.findLocked(c, name) == nil && r.heldByLocked(holder, c, name) >= r.maxPerHolder {
		return fmt.Sprintf("%s holds %d intercepts, the most tp's manager allows one user: tp leave one first", holder, r.maxPerHolder)
	}
	return ""
}

// conflict says who keeps an intercept with filter (nil: global) off key, whose intercepts
// but the one asked for are others: a global one needs the port alone, and a filtered one
// cannot share it with a global one.
func conflict(kind string, key interceptKey, filter *route.Filter, others []*intercept) string {
	var held []*intercept
	for _, o := range others {
		if filter == nil || o.filter == nil {
			held = append(held, o)
		}
	}
	if len(held) == 0 {
		return ""
	}
	msg := fmt.Sprintf("port %s of %s %s/%s is already intercepted by %s", key.port, kind, key.namespace, key.workload, describeAll(held))
	switch {
	case filter != nil:
		return msg + ", which takes every connection: a filtered intercept can share the port only with other filtered ones"
	case held[0].filter != nil:
		return msg + ": an intercept of every connection needs the port alone; intercept with an HTTP filter to share it"
	}
	return msg
}

// idTaken refuses a filter whose id another intercept of the port has: the id header must
// select one intercept.
func idTaken(name string, key interceptKey, filter *route.Filter, others []*intercept) string {
	if filter == nil || filter.ID == "" {
		return ""
	}
	for _, o := range others {
		if o.filter != nil && o.filter.ID == filter.ID {
			return fmt.Sprintf("intercept %q: id %q is taken on port %s of %s/%s by %s; pick another",
				name, filter.ID, key.port, key.namespace, key.workload, describe(o))
		}
	}
	return ""
}

// placeLocked puts c's intercept req names on key, and tells whether the agents' state
// changed. Asked again, an intercept keeps its id, since and place in the port's order (a
// client asserts its intercepts again after every reconnection); asked for another port,
// the old one ends and a new one takes the last place on the new port.
func (r *Registry) placeLocked(c *clientSession, req *tunnelpb.InterceptRequest, key interceptKey, filter *route.Filter, holder string) (*intercept, bool) {
	it := r.findLocked(c, req.GetName())
	if it != nil && it.key != key {
		r.removeLocked(it) // the same name re-pointed: the old one ends
		it = nil
	}
	changed := it == nil || !sameFilter(it.filter, filter) || it.wiretap != req.GetWiretap()
	if it == nil {
		it = &intercept{key: key, name: req.GetName(), id: r.newIDLocked(key), client: c, since: time.Now(),
			problem: r.problemLocked(key)}
		r.byKey[key] = append(r.byKey[key], it)
	}
	it.filter, it.wiretap, it.holder, it.grant, it.grantHash = filter, req.GetWiretap(), holder, req.GetGrant(), grant.Hash(req.GetSecret())
	return it, changed
}

// problemLocked is what the drift check last found for key's intercepts: a new one on the
// same port has the same problem.
func (r *Registry) problemLocked(key interceptKey) string {
	if its := r.byKey[key]; len(its) > 0 {
		return its[0].problem
	}
	return ""
}

func sameFilter(a, b *route.Filter) bool {
	if a == nil || b == nil {
		return a == b
	}
	return proto.Equal(a.Proto(), b.Proto())
}

// findLocked is c's intercept named name; nil for none.
func (r *Registry) findLocked(c *clientSession, name string) *intercept {
	for _, its := range r.byKey {
		for _, it := range its {
			if it.client == c && it.name == name {
				return it
			}
		}
	}
	return nil
}

// ofClientLocked is every intercept c holds.
func (r *Registry) ofClientLocked(c *clientSession) []*intercept {
	var mine []*intercept
	for _, its := range r.byKey {
		for _, it := range its {
			if it.client == c {
				mine = append(mine, it)
			}
		}
	}
	return mine
}

// othersLocked is key's intercepts but c's named name.
func (r *Registry) othersLocked(key interceptKey, c *clientSession, name string) []*intercept {
	var others []*intercept
	for _, it := range r.byKey[key] {
		if it.client != c || it.name != name {
			others = append(others, it)
		}
	}
	return others
}

// removeLocked ends it, leaving the other intercepts of its port in their order.
func (r *Registry) removeLocked(it *intercept) {
	rest := slices.DeleteFunc(r.byKey[it.key], func(o *intercept) bool { return o == it })
	if len(rest) == 0 {
		delete(r.byKey, it.key)
	} else {
		r.byKey[it.key] = rest
	}
	r.notifyLocked(it.key)
	r.endedLocked(it)
	r.releaseLocked(it.key, it.grant)
}

// newIDLocked picks an id no intercept of key has.
func (r *Registry) newIDLocked(key interceptKey) string {
	for {
		var b [8]byte
		_, _ = rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		if !slices.ContainsFunc(r.byKey[key], func(it *intercept) bool { return it.id == id }) {
			return id
		}
	}
}

// overlapLocked tells, for a filtered intercept, which other clients' intercepts of its
// port may take the same requests, and which of each pair gets them: the one created
// first. "" when none may.
func (r *Registry) overlapLocked(it *intercept) string {
	if it.filter == nil || it.wiretap {
		return ""
	}
	var parts []string
	older := true // the port's intercepts before it take what they share with it
	for _, o := range r.byKey[it.key] {
		if o == it {
			older = false
			continue
		}
		if o.client == it.client || o.filter == nil || o.wiretap || !route.MayOverlap(*it.filter, *o.filter) {
			continue
		}
		who := "which does not get them (this one was created first)"
		if older {
			who = "which gets them (created first)"
		}
		parts = append(parts, fmt.Sprintf("%q of %s (filter %s), %s", o.name, o.describeHolder(), o.filter, who))
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf("intercept %q (filter %s) may match the same requests as %s; a request that several filtered intercepts of port %s match goes to the one created first",
		it.name, it.filter, strings.Join(parts, "; "), it.key.port)
}

// describe names an intercept for another client: who holds it, since when, its name and
// its filter.
func describe(it *intercept) string {
	s := fmt.Sprintf("%s (since %s, as %q", it.describeHolder(), it.since.UTC().Format(time.RFC3339), it.name)
	if it.filter != nil {
		s += ", filter " + it.filter.String()
	}
	return s + ")"
}

// describeAll describes the first maxNamed of its, and counts the rest.
func describeAll(its []*intercept) string {
	var parts []string
	for _, it := range its[:min(len(its), maxNamed)] {
		parts = append(parts, describe(it))
	}
	s := strings.Join(parts, ", ")
	if len(its) > maxNamed {
		s += fmt.Sprintf(" and %d more", len(its)-maxNamed)
	}
	return s
}

func describeFilter(f *route.Filter) string {
	if f == nil {
		return "none (every connection)"
	}
	return f.String()
}

// agentStateLocked is what agent ag must know: its ports a global intercept holds
// (intercepted: an agent that knows no routes sends them whole), and the routes of those
// filtered intercepts hold (an agent that knows no routes sends them to the app).
func (r *Registry) agentStateLocked(ag *agentConn) *tunnelpb.AgentState {
	st := &tunnelpb.AgentState{}
	for k, all := range r.byKey {
		if !ag.matches(k) || !ag.ports[k.port] {
			continue
		}
		if taps := wiretaps(all); len(taps) > 0 {
			pr := &tunnelpb.PortRoutes{Port: k.port}
			for _, it := range taps {
				rt := &tunnelpb.Route{Id: it.id}
				if it.filter != nil {
					rt.Http = it.filter.Proto()
				}
				pr.Routes = append(pr.Routes, rt)
			}
			st.Taps = append(st.Taps, pr)
		}
		its := takers(all)
		if len(its) == 0 {
			continue
		}
		if global(its) != nil {
			st.Intercepted = append(st.Intercepted, k.port)
			continue
		}
		pr := &tunnelpb.PortRoutes{Port: k.port}
		for _, it := range its {
			pr.Routes = append(pr.Routes, &tunnelpb.Route{Id: it.id, Http: it.filter.Proto()})
		}
		st.Routes = append(st.Routes, pr)
	}
	slices.Sort(st.Intercepted)
	byPort := func(a, b *tunnelpb.PortRoutes) int { return strings.Compare(a.GetPort(), b.GetPort()) }
	slices.SortFunc(st.Routes, byPort)
	slices.SortFunc(st.Taps, byPort)
	return st
}

// global is the global intercept among its; nil for none. A wiretap of every connection
// takes none of them: it is no global intercept.
func global(its []*intercept) *intercept {
	for _, it := range its {
		if it.filter == nil && !it.wiretap {
			return it
		}
	}
	return nil
}

// takers are its but the wiretaps: the intercepts that take traffic.
func takers(its []*intercept) []*intercept {
	return slices.DeleteFunc(slices.Clone(its), func(it *intercept) bool { return it.wiretap })
}

// wiretaps are the wiretaps among its.
func wiretaps(its []*intercept) []*intercept {
	return slices.DeleteFunc(slices.Clone(its), func(it *intercept) bool { return !it.wiretap })
}

// flowTargetLocked is the intercept that takes a connection an agent hands over on key: the
// one of the route the agent matched, or, for none, the port's global one. Without one, why
// the connection goes to the app.
func (r *Registry) flowTargetLocked(key interceptKey, routeID string) (*intercept, string) {
	its := r.byKey[key]
	if routeID != "" {
		if i := slices.IndexFunc(its, func(it *intercept) bool { return it.id == routeID }); i >= 0 {
			return its[i], ""
		}
		return nil, fmt.Sprintf("the intercept of route %s on port %s of %s/%s ended", routeID, key.port, key.namespace, key.workload)
	}
	if g := global(its); g != nil {
		return g, ""
	}
	if len(takers(its)) > 0 {
		return nil, fmt.Sprintf("port %s of %s/%s is not intercepted whole: filtered intercepts hold it, and the connection names no route", key.port, key.namespace, key.workload)
	}
	return nil, fmt.Sprintf("port %s of %s/%s is not intercepted", key.port, key.namespace, key.workload)
}
