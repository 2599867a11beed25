package session

import (
	"context"
	"fmt"

	coordv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tpdev/tp/remote/grant"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Egress is a workload whose pods a session's connections leave from (tp run --egress
// workload), through its traffic agent, rather than from the manager's pod.
type Egress struct {
	Namespace, Kind, Workload string
}

func (e Egress) String() string { return fmt.Sprintf("%s/%s -n %s", e.Kind, e.Workload, e.Namespace) }

// startEgress writes the session's egress grant, a Lease of its own name in the workload's
// namespace written with the developer's credentials (package grant says why), and makes
// every dial carry it. The manager checks it before it asks an agent for a connection.
func (s *Session) startEgress(ctx context.Context, e Egress) error {
	ctx, cancel := context.WithTimeout(ctx, grantWait)
	defer cancel()
	me, err := whoAmI(ctx, s.cs)
	if err != nil {
		return err
	}
	secret, hash, err := grant.NewSecret()
	if err != nil {
		return err
	}
	target := grant.Request{Namespace: e.Namespace, Kind: e.Kind, Workload: e.Workload, Use: grant.UseEgress}
	l := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: grant.EgressLeaseName(e.Workload, hash), Namespace: e.Namespace}}
	setGrant(l, target, hash, s.icState().who, me)
	if _, err := s.cs.CoordinationV1().Leases(e.Namespace).Create(ctx, l, metav1.CreateOptions{FieldManager: "tp"}); err != nil {
		return fmt.Errorf("writing the egress grant %s/%s (lease) that lets connections leave as %s: %w", e.Namespace, l.Name, e, err)
	}
	s.egressGrant = heldGrant{lease: l.Name, secret: secret, holder: me, target: target}
	s.via = &tunnelpb.Via{Namespace: e.Namespace, Kind: e.Kind, Workload: e.Workload, Grant: l.Name, Secret: secret}
	s.cfg.Log.Info("connections leave from the workload's pods", "workload", e.String(), "grant", l.Name)
	return nil
}

// stopEgress removes the egress grant, if the session wrote one.
func (s *Session) stopEgress() {
	if s.via == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), grantWait)
	defer cancel()
	if err := s.deleteGrant(ctx, s.via.GetNamespace(), s.egressGrant); err != nil {
		s.cfg.Log.Warn("closing: the egress grant stays (harmless: its secret is gone)", "lease", s.egressGrant.lease, "err", err)
	}
}
