// Package browsertest starts headless Chromium for the tests that drive the
// forensics view (agent/webui and agent/alerts/e2e), so both find the browser,
// fail under CI=true when it is missing, and clean its profile the same way.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Chromium finds the browser: $VMLINEAGE_CHROMIUM, else Debian's
// chromium (scripts/install-chromium.sh installs it). With CI=true a missing
// browser fails the test; elsewhere it skips with the reason.
func Chromium(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("VMLINEAGE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "chromium not found (run agent/webui/scripts/install-chromium.sh or set VMLINEAGE_CHROMIUM)"
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// New starts a headless Chromium with a fresh profile.
func New(tb testing.TB) (context.Context, context.CancelFunc) {
	tb.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(Chromium(tb)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(ProfileDir(tb)),
		chromedp.WindowSize(1600, 1000),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, tcancel := context.WithTimeout(ctx, 2*time.Minute)
	if err := chromedp.Run(ctx); err != nil { // start the browser now, so failures name it
		tcancel()
		cancel()
		acancel()
		tb.Fatalf("start chromium: %v", err)
	}
	return ctx, func() { tcancel(); cancel(); acancel() }
}

// ProfileDir is a fresh Chromium profile. Not tb.TempDir: Chromium's helper
// processes can still write to the profile for a moment after the browser is
// cancelled, and TempDir's cleanup then fails the test on "directory not
// empty". Removal is retried here instead.
func ProfileDir(tb testing.TB) string {
	tb.Helper()
	d, err := os.MkdirTemp("", "vmlineage-chromium-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		var err error
		for i := 0; i < 50; i++ {
			if err = os.RemoveAll(d); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		tb.Logf("leaving chromium profile %s: %v", d, err)
	})
	return d
}
