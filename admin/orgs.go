package admin

import (
	"context"
	"encoding/json"
)

// SettingsUpdate changes the org settings it gives (nil fields keep their
// stored value), as PUT /v1/admin/orgs/{org} takes them.
type SettingsUpdate struct {
	OfflineMode       *bool   `json:"offline_mode,omitempty"`
	ConflictPolicy    *string `json:"conflict_policy,omitempty"`
	MaxOfflineSeconds *int64  `json:"max_offline_seconds,omitempty"`
	MaxPendingBytes   *int64  `json:"max_pending_bytes,omitempty"`
	MaxPatchOps       *int    `json:"max_patch_ops,omitempty"`
	MaxPatchBytes     *int64  `json:"max_patch_bytes,omitempty"`
	MaxRecordBytes    *int64  `json:"max_record_bytes,omitempty"`
	// The backend's hooks: the webhook that receives the org's change
	// feed, the secret that signs every request the server makes to the
	// backend, and the URL that validates devices' patches ("" removes a
	// URL).
	WebhookURL          *string `json:"webhook_url,omitempty"`
	WebhookSecret       *string `json:"webhook_secret,omitempty"`
	ValidationURL       *string `json:"validation_url,omitempty"`
	ValidationTimeoutMs *int64  `json:"validation_timeout_ms,omitempty"`
	// ValidationFallback is what happens to a device's patch while the
	// validator is down: "wait" (503, the device retries) or "pass".
	ValidationFallback *string `json:"validation_fallback,omitempty"`
}

// Org returns an org's settings as the server shows them (the webhook
// secret is never shown: webhook_secret_set says whether one is set).
func (c *Client) Org(ctx context.Context, org string) (json.RawMessage, error) {
	var out json.RawMessage
	if err := c.call(ctx, "GET", orgPath(org), nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// SetOrg changes an org's settings and returns them as stored.
func (c *Client) SetOrg(ctx context.Context, org string, u *SettingsUpdate) (json.RawMessage, error) {
	var out json.RawMessage
	if err := c.call(ctx, "PUT", orgPath(org), u, &out); err != nil {
		return nil, err
	}
	return out, nil
}
