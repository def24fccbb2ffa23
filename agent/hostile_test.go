package agent

import (
	"testing"
	"time"
)

// Rows an attacker with write access to certmgr_served, or a corrupted
// sealed key, cost only their own domains: the agent serves the rest and
// keeps following the store.
func TestAgentLeavesOutHostileRowsAndServesTheRest(t *testing.T) {
	t.Parallel()
	b := setup(t)
	good := b.put(t, "good.example.com", 1)
	b.put(t, "broken.example.com", 1)
	b.serve(t, "good.example.com", "broken.example.com")
	// A sealed key that no longer opens (bytes flipped), and rows whose
	// names would be nginx syntax or a path.
	b.pg.Exec(t, `UPDATE certmgr_lineage_version SET privkey_sealed = set_byte(privkey_sealed, 20, get_byte(privkey_sealed, 20) # 255)
		WHERE lineage = 'broken.example.com'`)
	b.pg.Exec(t, `INSERT INTO certmgr_served (domain, lineage, changed_version) VALUES
		('evil.example.com; include /etc/passwd', 'good.example.com', 0),
		('path.example.com', '../../../etc', 0),
		('ghost.example.com', 'ghost.example.com', 0)`)
	p := b.startPod(t, podOptions{})
	p.waitServes(t, "good.example.com", good, 30*time.Second)
	p.waitServes(t, "broken.example.com", "", 5*time.Second) // 421: not served, not fatal

	// The agent still follows changes.
	next := b.put(t, "good.example.com", 2)
	p.waitServes(t, "good.example.com", next, 30*time.Second)
	if code, body := p.get(t, "/readyz"); code != 200 {
		t.Fatalf("/readyz %d %s", code, body)
	}
}
