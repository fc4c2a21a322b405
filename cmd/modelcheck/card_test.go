package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nhsx/dnarisk/internal/testenv"
)

// cardPage is what a person sees in card.html, read from the rendered page.
type cardPage struct {
	Title string `json:"title"`
	// Sections are the ids of the page's sections and headings, in page order.
	Sections []string `json:"sections"`
	Summary  string   `json:"summary"`
	NotFor   string   `json:"notFor"`
	// Images counts images that decoded (naturalWidth > 0), Broken those that did not.
	Images int `json:"images"`
	Broken int `json:"broken"`
	// SubgroupHeader and SubgroupRows are the subgroup table's column titles and cell texts.
	SubgroupHeader []string   `json:"subgroupHeader"`
	SubgroupRows   [][]string `json:"subgroupRows"`
	// External counts elements that would load anything from elsewhere.
	External int `json:"external"`
}

// chromium finds Debian's chromium (make test installs it with `make browser`). Missing, the
// test skips, or fails under CI=true.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if testenv.CI() {
		t.Fatal("chromium is required under CI=true (make browser installs it)")
	}
	t.Skip("SKIPPING BROWSER TEST: no chromium on PATH (make browser, or apt-get install chromium)")
	return ""
}

// renderCard opens a card.html from disk in headless Chromium, with the network off, and
// reads what the page shows.
func renderCard(t *testing.T, path string) cardPage {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// Nothing may come from elsewhere: a card is one self-contained file.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1100),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	ctx, stop := context.WithTimeout(bctx, 60*time.Second)
	defer stop()
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+abs), chromedp.WaitVisible(chromedp.CSS(`#subgroups`))); err != nil {
		t.Fatalf("render %s: %v", path, err)
	}
	page, err := chromedp.Run(ctx, chromedp.Evaluate[cardPage](`(async () => {
		const imgs = [...document.images];
		await Promise.all(imgs.map(i => i.decode().catch(() => {})));
		const text = s => (document.querySelector(s) || {}).innerText || "";
		const t = document.querySelector('#subgroups');
		return {
			title: document.title,
			sections: [...document.querySelectorAll('section[id], h2[id], table[id]')].map(e => e.id),
			summary: text('#summary'), notFor: text('#not-for'),
			images: imgs.filter(i => i.naturalWidth > 0).length, broken: imgs.filter(i => !(i.naturalWidth > 0)).length,
			subgroupHeader: [...t.querySelectorAll('thead th')].map(e => e.innerText.trim()),
			subgroupRows: [...t.querySelectorAll('tbody tr')].map(r => [...r.cells].map(c => c.innerText.trim())),
			external: [...document.querySelectorAll('script, link, iframe, [src]')].filter(e => !(e.src || '').startsWith('data:')).length,
		};
	})()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return page
}

// checkCard asserts what every card.html must show: the summary first, the not-for text,
// its four plots decoded from inline data, nothing external, and a subgroup table with the
// columns the card promises and rows for the given attributes.
func checkCard(t *testing.T, p cardPage, attributes ...string) {
	t.Helper()
	if len(p.Sections) < 3 || p.Sections[0] != "summary" || p.Sections[1] != "not-for" {
		t.Errorf("sections %v: want the summary, then what it must not be used for, first", p.Sections)
	}
	order := strings.Join(p.Sections, " ")
	for _, want := range []string{"performance headline", "calibration", "contacts", "subgroups", "bands", "windows", "leakage", "features"} {
		if !strings.Contains(order, want) {
			t.Errorf("sections %v lack %q", p.Sections, want)
		}
	}
	if !strings.Contains(p.Summary, "AUC") || !strings.Contains(p.Summary, "95% confidence interval") ||
		!strings.Contains(p.NotFor, "Deciding who is offered care") {
		t.Errorf("summary %q / not-for %q", p.Summary, p.NotFor)
	}
	if p.Images != 4 || p.Broken != 0 || p.External != 0 {
		t.Errorf("images %d decoded, %d broken, %d external elements: want 4, 0, 0", p.Images, p.Broken, p.External)
	}
	want := []string{"attribute", "group", "bookings", "DNA rate", "AUC (95% CI)", "observed / expected", "flagged high"}
	if len(p.SubgroupHeader) < len(want) || strings.Join(p.SubgroupHeader[:len(want)], "|") != strings.Join(want, "|") {
		t.Errorf("subgroup header %q, want it to start %q", p.SubgroupHeader, want)
	}
	seen := map[string]int{}
	for _, r := range p.SubgroupRows {
		seen[r[0]]++
		if len(r) != len(p.SubgroupHeader) {
			t.Errorf("subgroup row %q has %d cells, header %d", r, len(r), len(p.SubgroupHeader))
		}
	}
	for _, a := range attributes {
		if seen[a] < 2 {
			t.Errorf("subgroup table rows %v: want at least two groups of %q", seen, a)
		}
	}
}

// TestCardHTMLInChromium renders the committed default model's card.html in headless
// Chromium.
func TestCardHTMLInChromium(t *testing.T) {
	p := renderCard(t, filepath.Join(root, "models", "default", "card.html"))
	checkCard(t, p, "age band", "deprivation decile")
	t.Logf("%s: %d sections, %d subgroup rows, %d images", p.Title, len(p.Sections), len(p.SubgroupRows), p.Images)
}
