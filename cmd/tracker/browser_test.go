package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tracklink/tracklink/internal/testkit"
)

// newBrowser starts headless Chromium (Debian's chromium, which .ci/run
// installs) with a window of w × h, for at most within. The test skips
// unless the browser tier (TRACKLINK_BROWSER_TEST) is on, and fails when
// it is on and Chromium is missing. The browser process stops with the
// test.
func newBrowser(t *testing.T, w, h int, within time.Duration) context.Context {
	t.Helper()
	testkit.Browser.Require(t)
	path := testkit.Browser.Tool(t, "chromium", "apt-get install chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(w, h))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc) // stops the browser process
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(ctx, within)
	t.Cleanup(cancelT)
	return ctx
}

// screenshotDir is where the browser tests put screenshots:
// $TRACKLINK_SCREENSHOTS (the README's are made this way) or the test's
// temporary directory.
func screenshotDir(t *testing.T) string {
	if dir := os.Getenv("TRACKLINK_SCREENSHOTS"); dir != "" {
		return dir
	}
	return t.TempDir()
}

// screenshot saves the whole page as dir/name (PNG).
func screenshot(dir, name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		png, err := chromedp.FullScreenshot(100)(ctx, tg)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, name), png, 0o644)
	})
}

// browse runs steps in the browser, failing the test with what on error.
func browse(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
