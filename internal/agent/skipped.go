package agent

import (
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"

	"github.com/obs-agent/obs-agent/internal/selector"
)

// addresses matches the addresses and offsets inside a skip reason
// ("bytes at +0x1f do not decode"), which differ per function and would
// split one reason into as many as there are functions.
var addresses = regexp.MustCompile(`\+?0x[0-9a-fA-F]+(-0x[0-9a-fA-F]+)?`)

// skipSummary counts the skipped functions per reason, addresses left out,
// most common first: "inlined at every call site (...) 31, assembly
// function (...) 2".
func skipSummary(skipped []selector.Skipped) string {
	counts := map[string]int{}
	for _, sk := range skipped {
		counts[addresses.ReplaceAllString(sk.Reason, "…")]++
	}
	reasons := make([]string, 0, len(counts))
	for r := range counts {
		reasons = append(reasons, r)
	}
	sort.Slice(reasons, func(i, j int) bool {
		if counts[reasons[i]] != counts[reasons[j]] {
			return counts[reasons[i]] > counts[reasons[j]]
		}
		return reasons[i] < reasons[j]
	})
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = fmt.Sprintf("%s: %d", r, counts[r])
	}
	return strings.Join(parts, "; ")
}

// reportSkipped logs the matched functions that cannot be probed as one
// line, whatever their number (a package glob matches dozens on every
// attach), and each of them at debug level. `obs-agent list` shows them
// too, with the same reasons.
func reportSkipped(log *slog.Logger, exe string, skipped []selector.Skipped) {
	if len(skipped) == 0 {
		return
	}
	for _, sk := range skipped {
		log.Debug("matched function cannot be probed", "function", sk.Name, "reason", sk.Reason)
	}
	log.Warn(fmt.Sprintf("%d matched functions cannot be probed", len(skipped)),
		"reasons", skipSummary(skipped),
		"list", fmt.Sprintf("run with --debug, or 'obs-agent list --binary %s' with the same patterns", exe))
}
