package session

import (
	"testing"

	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// The manager's reports of an intercept's problem are kept for Intercepts (and so tp
// status), and each change, back to none included, is told once; a waiting Intercept still
// gets its result.
func TestInterceptProblems(t *testing.T) {
	s := &Session{}
	ic := s.icState()
	ic.specs["web-http"] = InterceptSpec{Name: "web-http", Namespace: "shop", Kind: "Deployment", Workload: "web", Port: "http"}
	type told struct{ name, problem string }
	var heard []told
	s.OnInterceptProblem(func(name, problem string) { heard = append(heard, told{name, problem}) })
	problem := func() string { return s.Intercepts()[0].Problem }

	wait := make(chan *tunnelpb.InterceptResult, 1)
	ic.waiters["web-http"] = wait
	s.takeResult(&tunnelpb.InterceptResult{Name: "web-http", Agents: 1})
	if res := <-wait; res.GetAgents() != 1 || problem() != "" || len(heard) != 0 {
		t.Fatalf("a plain answer: %v, problem %q, told %v", res, problem(), heard)
	}
	const gone = "the agent record of deployment/web is gone: new pods will start without the agent; run tp intercept again"
	s.takeResult(&tunnelpb.InterceptResult{Name: "web-http", Agents: 1, Problem: gone})
	s.takeResult(&tunnelpb.InterceptResult{Name: "web-http", Agents: 1, Problem: gone}) // asked again: the same
	if problem() != gone || len(heard) != 1 || heard[0] != (told{"web-http", gone}) {
		t.Fatalf("a problem: %q, told %v", problem(), heard)
	}
	if st := s.Status(); len(st.Intercepts) != 1 || st.Intercepts[0].Problem != gone {
		t.Errorf("status: %+v", st.Intercepts)
	}
	s.takeResult(&tunnelpb.InterceptResult{Name: "web-http", Error: "lost"}) // a refusal says nothing of the problem
	s.takeResult(&tunnelpb.InterceptResult{Name: "other", Problem: "x"})     // not held here
	s.takeResult(&tunnelpb.InterceptResult{Name: "web-http", Agents: 1})
	if problem() != "" || len(heard) != 2 || heard[1] != (told{"web-http", ""}) {
		t.Fatalf("the problem cleared: %q, told %v", problem(), heard)
	}
	s.takeResult(&tunnelpb.InterceptResult{Name: "web-http", Problem: gone})
	if err := s.Leave("web-http"); err != nil {
		t.Fatal(err)
	}
	if len(ic.problems) != 0 {
		t.Errorf("a left intercept's problem stays: %v", ic.problems)
	}
}

// A report the manager sends on its own never stands in for the answer to a request the
// session waits on: moving an intercept to a port another holds must not read as success
// because a report of the old one arrived meanwhile.
func TestInterceptReportAnswersNoRequest(t *testing.T) {
	s := &Session{}
	ic := s.icState()
	ic.specs["web-http"] = InterceptSpec{Name: "web-http", Namespace: "shop", Kind: "Deployment", Workload: "web", Port: "http"}
	wait := make(chan *tunnelpb.InterceptResult, 1)
	ic.waiters["web-http"] = wait
	s.takeResult(&tunnelpb.InterceptResult{Name: "web-http", Agents: 1, Problem: "pods run without tp's agent", Report: true})
	select {
	case res := <-wait:
		t.Fatalf("a report answered the request: %v", res)
	default:
	}
	if got := s.Intercepts()[0].Problem; got != "pods run without tp's agent" {
		t.Errorf("the report's problem was not kept: %q", got)
	}
	s.takeResult(&tunnelpb.InterceptResult{Name: "web-http", Error: "already intercepted by alice"})
	if res := <-wait; res.GetError() == "" {
		t.Errorf("the answer: %v", res)
	}
}
