package servertest_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/deltasync/deltasync/internal/servertest"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// A started server answers on loopback with the tokens it mints: an admin
// switches an org on and uploads a data set, its user sees the version,
// and another user's token does not open it.
func TestStartServesWithMintedTokens(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	s.SetOrg(t, "acme", `{"offline_mode":true}`)
	s.Upload(t, "acme", "alice", []byte(`{"key":"tasks/1","value":{"s":"open"}}`+"\n"))

	code, body := s.Do(t, http.MethodGet, "/v1/status", s.UserToken(t, "acme", "alice"), nil)
	var st wire.StatusResponse
	if code != http.StatusOK || json.Unmarshal(body, &st) != nil || st.Head != 1 || st.Records != 1 {
		t.Fatalf("status: %d %s; want head 1 with one record", code, body)
	}
	if head, err := snapshot.Head(t.Context(), s.Store, "acme", "alice"); err != nil || head != 1 {
		t.Fatalf("the store holds head %d (%v), want the uploaded version", head, err)
	}
	if code, _ := s.Do(t, http.MethodGet, "/v1/status", "not-a-token", nil); code != http.StatusUnauthorized {
		t.Errorf("a bad token: %d, want 401", code)
	}
}

// Close stops the server (it may be called again) and nothing answers
// afterwards.
func TestCloseStops(t *testing.T) {
	s, err := servertest.New(servertest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if resp, err := http.Get(s.URL + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("the closed server still answers: %d", resp.StatusCode)
	}
}
