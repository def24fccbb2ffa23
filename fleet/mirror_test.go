package fleet

import (
	"context"
	"slices"
	"testing"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/certstore"
	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/nginxconf"
)

// A lineage purged on worker A and issued again there must replace every
// copy of the old one: worker B's mirror still holds the purged lineage (at
// version 2 after a renewal, or at version 1), and whatever B does next —
// publish, or issue for the name — the store and both mirrors end with the
// new certificate and no version of the purged one.
func TestPurgeThenReissueReplacesStaleMirrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc     string
		renewed  bool   // the purged lineage had a second version
		onWorker string // what B does after A's push: publish or issue
	}{
		{desc: "B holds version 2, publishes", renewed: true, onWorker: "publish"},
		{desc: "B holds version 1, publishes", renewed: false, onWorker: "publish"},
		{desc: "B holds version 2, issues", renewed: true, onWorker: "issue"},
		{desc: "B holds version 1, issues", renewed: false, onWorker: "issue"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			st, _ := openStore(t)
			ctx := context.Background()
			ca := testpeers.NewCA(t, "purge")
			const x = "x.example.com"
			old := []certstore.Version{version(t, ca, 1, x)}
			putStored(t, st, x, old...)
			if tc.renewed {
				old = append(old, version(t, ca, 2, x))
				putStored(t, st, x, old...)
			}
			mA, mB := NewMirror(st, t.TempDir()), NewMirror(st, t.TempDir())
			for _, m := range []*Mirror{mA, mB} {
				if err := m.Pull(ctx); err != nil {
					t.Fatal(err)
				}
			}

			purge(t, st, mA, x)
			issued := []string{issueLocally(t, mA, ca, x)}
			if err := mA.Push(ctx, x); err != nil {
				t.Fatal(err)
			}

			switch tc.onWorker {
			case "publish":
				pub := NewPublisher(st, mB, nginxconf.Config{}, zerolog.Nop())
				if _, err := pub.Regenerate(ctx, []nginxconf.Domain{{Name: x, Lineage: x}}); err != nil {
					t.Fatalf("publish on worker B: %v", err)
				}
			case "issue":
				// The issue pipeline pulls before it looks for the lineage.
				if err := mB.Pull(ctx); err != nil {
					t.Fatalf("pull on worker B: %v", err)
				}
				issued = append(issued, issueLocally(t, mB, ca, x))
				if err := mB.Push(ctx, x); err != nil {
					t.Fatalf("push on worker B: %v", err)
				}
			}
			if err := mA.Pull(ctx); err != nil {
				t.Fatal(err)
			}

			want := issued[len(issued)-1]
			all, cur := storedSerials(t, st, x)
			if cur != want {
				t.Errorf("store serves %s, want the new %s", cur, want)
			}
			for _, v := range old {
				if slices.Contains(all, v.Serial) {
					t.Errorf("store holds purged version %d (%s) again: %v", v.N, v.Serial, all)
				}
			}
			for w, m := range map[string]*Mirror{"A": mA, "B": mB} {
				all, live := localSerials(t, m.Dir(), x)
				if live != want {
					t.Errorf("worker %s mirror serves %q, want %s", w, live, want)
				}
				for _, v := range old {
					if slices.Contains(all, v.Serial) {
						t.Errorf("worker %s mirror keeps purged version %d (%s)", w, v.N, v.Serial)
					}
				}
			}
		})
	}
}

// A lineage the store no longer holds leaves every mirror at its next pull.
func TestPullRemovesLineagesTheStoreLost(t *testing.T) {
	t.Parallel()
	st, _ := openStore(t)
	ctx := context.Background()
	ca := testpeers.NewCA(t, "prune")
	putStored(t, st, "gone.example.com", version(t, ca, 1, "gone.example.com"))
	putStored(t, st, "kept.example.com", version(t, ca, 1, "kept.example.com"))
	m := NewMirror(st, t.TempDir())
	if err := m.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteLineage(ctx, "gone.example.com"); err != nil {
		t.Fatal(err)
	}
	if err := m.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	if _, live := localSerials(t, m.Dir(), "gone.example.com"); live != "" {
		t.Errorf("mirror still holds the deleted lineage (%s)", live)
	}
	if _, live := localSerials(t, m.Dir(), "kept.example.com"); live == "" {
		t.Error("mirror lost a stored lineage")
	}
}

// A certificate saved into the mirror whose push never happened (the worker
// died between the two) survives the next process's pull, which stores it:
// for a renewal of a stored lineage and for a new lineage alike.
func TestUnpushedIssuanceSurvivesPullAndIsPushed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc   string
		stored bool
	}{
		{desc: "renewal", stored: true},
		{desc: "new lineage", stored: false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			st, _ := openStore(t)
			ctx := context.Background()
			ca := testpeers.NewCA(t, "crash")
			const x = "x.example.com"
			if tc.stored {
				putStored(t, st, x, version(t, ca, 1, x))
			}
			dir := t.TempDir()
			m := NewMirror(st, dir)
			if err := m.Pull(ctx); err != nil {
				t.Fatal(err)
			}
			serial := issueLocally(t, m, ca, x)
			// The worker dies here; another process starts on the same
			// directory and pulls, as every start does.
			restarted := NewMirror(st, dir)
			if err := restarted.Pull(ctx); err != nil {
				t.Fatal(err)
			}
			if _, live := localSerials(t, dir, x); live != serial {
				t.Errorf("mirror serves %q after the pull, want the unpushed %s", live, serial)
			}
			if _, cur := storedSerials(t, st, x); cur != serial {
				t.Errorf("store serves %q, want the unpushed %s pushed", cur, serial)
			}
			// It is pushed once: another worker's pull gets it, and a second
			// pull here leaves it alone.
			other := NewMirror(st, t.TempDir())
			if err := other.Pull(ctx); err != nil {
				t.Fatal(err)
			}
			if _, live := localSerials(t, other.Dir(), x); live != serial {
				t.Errorf("other worker serves %q, want %s", live, serial)
			}
			if err := restarted.Pull(ctx); err != nil {
				t.Fatal(err)
			}
			if _, live := localSerials(t, dir, x); live != serial {
				t.Errorf("second pull: mirror serves %q, want %s", live, serial)
			}
		})
	}
}

// Two workers renew one lineage at once, both saving version 2: both
// certificates are stored (the second as version 3, the one served) and
// neither worker is left unable to push.
func TestConcurrentIssuancesAreBothStored(t *testing.T) {
	t.Parallel()
	st, _ := openStore(t)
	ctx := context.Background()
	ca := testpeers.NewCA(t, "race")
	const x = "x.example.com"
	putStored(t, st, x, version(t, ca, 1, x))
	mA, mB := NewMirror(st, t.TempDir()), NewMirror(st, t.TempDir())
	for _, m := range []*Mirror{mA, mB} {
		if err := m.Pull(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sA, sB := issueLocally(t, mA, ca, x), issueLocally(t, mB, ca, x)
	if err := mA.Push(ctx, x); err != nil {
		t.Fatal(err)
	}
	if err := mB.Push(ctx, x); err != nil {
		t.Fatalf("second worker's push: %v", err)
	}
	all, cur := storedSerials(t, st, x)
	if cur != sB || !slices.Contains(all, sA) || len(all) != 3 {
		t.Errorf("store holds %v serving %s, want 3 versions with %s and %s, serving %s", all, cur, sA, sB, sB)
	}
	for _, m := range []*Mirror{mA, mB} {
		if err := m.Pull(ctx); err != nil {
			t.Fatal(err)
		}
		if _, live := localSerials(t, m.Dir(), x); live != sB {
			t.Errorf("mirror %s serves %q, want %s", m.Dir(), live, sB)
		}
	}
}
