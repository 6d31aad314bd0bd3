// Package browsertest drives obs-agent's web UI in a real headless
// Chromium (chromedp) against a store made by tracing the bundled testdata
// programs. It is its own module so the main module does not depend on
// chromedp; run it with `make test-ui`.
package browsertest
