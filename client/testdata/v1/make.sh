#!/usr/bin/env bash
# Makes the state-format-1 fixture of the migration test (TestMigratesFormat1)
# with the code of that format: commit 109b2c9 (main before issue 13).
#
#   git worktree add /tmp/v1 109b2c9 && (cd /tmp/v1 && go build -o /tmp/ds-v1 ./cmd/deltasync)
#   client/testdata/v1/make.sh /tmp/ds-v1
#
# It leaves here:
#   store/       the server's directory store (versions 1-4, chunk secret inside)
#   state/       the client's state directory (state.db), format 1: synced at
#                version 3, edits sent and applied as version 4 (not pulled
#                yet: in the sent bucket), a conflict, queued edits, and a
#                patch in flight that never reached the server
#   export.ndjson, status.json, conflicts.json: what format-1 code showed
set -euo pipefail
ds=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
rm -rf "$here/store" "$here/state"
port=18555
url=http://127.0.0.1:$port

"$ds" gen --size 48KB --seed 13 --out "$work/data.ndjson"
"$ds" build --store "file://$here/store" --org acme --user kim --input "$work/data.ndjson"
serve() { "$ds" serve --dev --store "file://$here/store" --addr 127.0.0.1:$port --log-level error >/dev/null 2>&1 & sleep 1; }
serve
admin=$("$ds" token --dev --admin --ttl 1h 2>/dev/null)
kim=$("$ds" token --dev --org acme --user kim --ttl 1h 2>/dev/null)
curl -sf -X PUT -H "Authorization: Bearer $admin" -d '{"offline_mode":true}' $url/v1/admin/orgs/acme >/dev/null
c() { "$ds" client "$@" --dir "$here/state" --server $url --token "$kim"; }

keys=($(head -c 100000 "$work/data.ndjson" | grep -o '"key":"tasks/[^"]*"' | cut -d'"' -f4 | head -3))
c pull
# Another device changes a task: version 2.
curl -sf -X POST -H "Authorization: Bearer $kim" \
  -d "{\"id\":\"other-1\",\"base\":1,\"ops\":[{\"op\":\"merge\",\"key\":\"${keys[0]}\",\"patch\":{\"title\":\"changed elsewhere\"}}]}" \
  $url/v1/patches >/dev/null
# This device changes the same field at version 1: a conflict (client wins), version 3.
c merge "${keys[0]}" '{"title":"changed here"}'
c push
c pull
# Edits sent and applied (version 4), not pulled: they stay in the sent bucket.
c put notes/sent '{"text":"sent, not pulled"}'
c merge "${keys[1]}" '{"state":"done"}'
c push
# A patch in flight that never reached the server (the server is down).
kill $(jobs -p); wait 2>/dev/null || true
c put notes/inflight '{"text":"formed, never delivered"}'
c push && { echo "push with the server down succeeded" >&2; exit 1; } || true
# Queued edits.
c put notes/queued '{"text":"queued","n":1}'
c merge "${keys[2]}" '{"priority":3}'
c delete "${keys[1]}"
c export >"$here/export.ndjson"
c status --json >"$here/status.json"
c conflicts --json >"$here/conflicts.json"
ls -la "$here/state" "$here/store"
