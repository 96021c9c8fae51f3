package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/checkpoint"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/replay"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// Checkpoints is what the API needs of the node's checkpointer
// (internal/checkpoint): its keys, the checkpoints a verification must
// find, signing on demand, and the check of a chain an export streams.
type Checkpoints interface {
	Trust() audit.Trust
	Keys() []checkpoint.KeyInfo
	Anchors(ctx context.Context, t tenant.ID) ([]contract.Checkpoint, error)
	Latest(ctx context.Context, t tenant.ID) (contract.Checkpoint, bool, error)
	Sign(ctx context.Context, t tenant.ID) (contract.Checkpoint, error)
	Check(t tenant.ID) *checkpoint.ChainCheck
}

// auditKeys serves the node's audit public keys (public: they verify,
// they do not grant). A verifier should pin them from a source it trusts
// (`exoarmur audit pubkey` on the node), not only from this answer.
func (s *Server) auditKeys(w http.ResponseWriter, _ *http.Request) error {
	if s.cfg.Checkpoints == nil {
		return contract.Errorf(contract.CodeNotFound, "this node signs no checkpoints")
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": s.cfg.Checkpoints.Keys()})
	return nil
}

// getCheckpoint answers the tenant chain's latest stored checkpoint.
func (s *Server) getCheckpoint(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Checkpoints == nil {
		return contract.Errorf(contract.CodeNotFound, "this node signs no checkpoints")
	}
	ri := info(r)
	cp, ok, err := s.cfg.Checkpoints.Latest(r.Context(), ri.tenant)
	if err != nil {
		return contract.Wrap(contract.CodeStoreUnavailable, "cannot read the checkpoints", err)
	}
	if !ok {
		return contract.Errorf(contract.CodeNotFound, "no checkpoint of %s yet: POST this path to sign one", ri.tenant)
	}
	writeJSON(w, http.StatusOK, cp)
	return nil
}

// signCheckpoint signs the chain's head now, after verifying that it
// extends the node's last checkpoint of it.
func (s *Server) signCheckpoint(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Checkpoints == nil {
		return contract.Errorf(contract.CodeNotFound, "this node signs no checkpoints")
	}
	ri := info(r)
	cp, err := s.cfg.Checkpoints.Sign(r.Context(), ri.tenant)
	switch {
	case errors.Is(err, checkpoint.ErrEmpty):
		return contract.Errorf(contract.CodeNotFound, "the audit chain of %s has no records", ri.tenant)
	case errors.Is(err, checkpoint.ErrDiverged):
		return contract.Wrap(contract.CodeConflict, "the audit chain no longer extends its last checkpoint: it was rewritten or recreated in the store; nothing was signed", err)
	case err != nil:
		return contract.Wrap(contract.CodeStoreUnavailable, "cannot sign a checkpoint", err)
	}
	writeJSON(w, http.StatusOK, cp)
	return nil
}

// anchor makes a live verification check the chain against the
// checkpoints the node knows of it (Checkpoints.Anchors).
func (s *Server) anchor(ctx context.Context, rp *replay.Replayer, t tenant.ID) error {
	if s.cfg.Checkpoints == nil {
		return nil
	}
	anchors, err := s.cfg.Checkpoints.Anchors(ctx, t)
	if err != nil {
		return contract.Wrap(contract.CodeStoreUnavailable, "cannot read the checkpoints", err)
	}
	rp.Anchor(s.cfg.Checkpoints.Trust(), false, false)
	rp.Require(anchors...)
	return nil
}
