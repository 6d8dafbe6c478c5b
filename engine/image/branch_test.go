package image

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBranch: after generation 2 of 1-4 is restarted, 3 and 4 are a
// history branch that List shows, that a restart picking the newest good
// generation passes over, and that Prune removes before the job's own
// line; an explicit restart of a branch generation takes it back.
func TestBranch(t *testing.T) {
	s := newStore(t)
	for range 4 {
		commitGen(t, s, testFiles{"pages-1.img": []byte("p")})
	}
	marked, err := s.Branch(2, time.Now())
	must(t, err)
	if !slices.Equal(marked, []int{3, 4}) {
		t.Fatalf("Branch(2) marked %v, want [3 4]", marked)
	}
	if latest, _ := s.Latest(); latest != 2 {
		t.Errorf("latest is %d after the restart of 2, want 2", latest)
	}
	if again, _ := s.Branch(2, time.Now()); len(again) != 0 {
		t.Errorf("a second Branch(2) marked %v again", again)
	}
	g, err := s.NewestGood(nil)
	must(t, err)
	if g.Gen != 2 {
		t.Errorf("newest good generation %d, want 2: the branch is passed over", g.Gen)
	}
	infos, err := s.List(false)
	must(t, err)
	for _, i := range infos {
		onBranch := i.Generation > 2
		if (i.Branch != "") != onBranch || onBranch && !strings.Contains(i.Branch, "generation 2 was restarted") {
			t.Errorf("generation %d listed with branch %q", i.Generation, i.Branch)
		}
	}

	// The job's next checkpoint is 5, on its line.
	commitGen(t, s, testFiles{"pages-1.img": []byte("p")})
	must(t, s.Prune(2))
	gens, err := s.Generations()
	must(t, err)
	if !slices.Equal(gens, []int{2, 5}) {
		t.Errorf("after Prune(2): %v, want [2 5] (the branch first, then the oldest of the line)", gens)
	}
	if s.OnBranch(3) != "" || s.OnBranch(4) != "" {
		t.Error("Prune left the markers of the generations it removed")
	}
}

// TestBranchRejoin: restarting a generation on a branch takes it back
// into the line, and makes what followed it the branch.
func TestBranchRejoin(t *testing.T) {
	s := newStore(t)
	for range 3 {
		commitGen(t, s, testFiles{"pages-1.img": []byte("p")})
	}
	_, err := s.Branch(1, time.Now())
	must(t, err)
	commitGen(t, s, testFiles{"pages-1.img": []byte("p")}) // 4, after 1
	marked, err := s.Branch(3, time.Now())
	must(t, err)
	if !slices.Equal(marked, []int{4}) {
		t.Errorf("Branch(3) marked %v, want [4]", marked)
	}
	for gen, want := range map[int]bool{1: false, 2: true, 3: false, 4: true} {
		if got := s.OnBranch(gen) != ""; got != want {
			t.Errorf("generation %d on a branch: %v, want %v", gen, got, want)
		}
	}
	if g, err := s.NewestGood(nil); err != nil || g.Gen != 3 {
		t.Errorf("newest good: %v %v, want generation 3", g, err)
	}
}
