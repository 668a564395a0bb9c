package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/wire"
)

// Write validation: an org may name a validation_url. Each device patch
// of the org is then sent there (wire.ValidationRequest, signed like a
// webhook, with the org's validation timeout as its deadline) before it is
// replayed, and the ops the validator refuses (wire.ValidationResponse)
// become rejected receipts with its reason, while the others apply. It
// runs inside diff.Apply (ApplyOptions.Check), after the stored answer is
// looked up: a retry of a patch already applied is answered from storage
// and not validated again.
//
// A validator that does not answer 200 with a well-formed answer in time is
// down. The org's validation_fallback then decides: "wait" (the default)
// refuses the patch with 503 and Retry-After, nothing applied, so the
// device keeps it and sends it again; "pass" applies it unvalidated.

// errValidatorDown is a patch refused because the org's validator is down
// under the "wait" fallback.
var errValidatorDown = errors.New("the organization's validator is unavailable")

// Bounds of a validator's answer.
const (
	maxValidationAnswer = 1 << 20
	maxRejectReason     = 1024
)

// validationCheck returns the Check of a device patch of req's org and
// user, nil if the org validates nothing.
func (s *Server) validationCheck(req *request, h HookSettings) func(context.Context, *diff.Patch) (map[int]string, error) {
	if h.ValidationURL == "" {
		return nil
	}
	return func(ctx context.Context, p *diff.Patch) (map[int]string, error) {
		refused, err := s.validate(ctx, req.Org, req.User, h, p)
		switch {
		case err == nil:
			s.backend.validations.WithLabelValues("ok").Inc()
			return refused, nil
		case ctx.Err() != nil:
			return nil, ctx.Err() // the device left: not the validator's fault
		case h.ValidationFallback == FallbackPass:
			s.backend.validations.WithLabelValues("down_pass").Inc()
			s.log.Warn("validator down: patch applied unvalidated (validation_fallback pass)", "request_id", req.ID,
				"org", req.Org, "user", req.User, "patch", p.ID, "err", err)
			return nil, nil
		}
		s.backend.validations.WithLabelValues("down_wait").Inc()
		s.log.Warn("validator down: patch refused for now (validation_fallback wait)", "request_id", req.ID,
			"org", req.Org, "user", req.User, "patch", p.ID, "err", err)
		return nil, fmt.Errorf("%w: %v", errValidatorDown, err)
	}
}

// validate asks the org's validator which ops of p it refuses.
func (s *Server) validate(ctx context.Context, org, user string, h HookSettings, p *diff.Patch) (map[int]string, error) {
	body, err := json.Marshal(wire.ValidationRequest{Org: org, User: user, Patch: p})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, min(h.validationTimeout(), s.opts.Backend.HookTimeout))
	defer cancel()
	req, err := signedRequest(ctx, h.ValidationURL, []byte(h.WebhookSecret), body)
	if err != nil {
		return nil, err
	}
	resp, err := s.hooks.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, fmt.Errorf("validator answered %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxValidationAnswer+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxValidationAnswer {
		return nil, fmt.Errorf("validator answer over %d bytes", maxValidationAnswer)
	}
	return refusals(b, len(p.Ops))
}

// refusals decodes a validator's answer: each refused op once, by an index
// of the patch, with a reason (a missing one gets a default; a long one is
// cut).
func refusals(b []byte, ops int) (map[int]string, error) {
	var vr wire.ValidationResponse
	if err := json.Unmarshal(b, &vr); err != nil {
		return nil, fmt.Errorf("validator answer: %w", err)
	}
	out := make(map[int]string, len(vr.Rejected))
	for _, r := range vr.Rejected {
		if r.Index < 0 || r.Index >= ops {
			return nil, fmt.Errorf("validator refused op %d of a patch of %d", r.Index, ops)
		}
		if _, dup := out[r.Index]; dup {
			return nil, fmt.Errorf("validator refused op %d twice", r.Index)
		}
		reason := strings.ToValidUTF8(r.Reason, "\uFFFD")
		if reason == "" {
			reason = "refused by the organization's validator"
		}
		if len(reason) > maxRejectReason {
			cut := maxRejectReason
			for cut > 0 && !utf8.RuneStart(reason[cut]) {
				cut--
			}
			reason = reason[:cut]
		}
		out[r.Index] = reason
	}
	return out, nil
}
