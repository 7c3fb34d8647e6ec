#!/usr/bin/env bash
# Sums campaigns.tsv per target: runs logged, wall and CPU hours, executions,
# edges when the first logged run started and at the end of the latest one,
# the latest run's own start → end, and when it last found a new input, as a
# Markdown table.
cd "$(dirname "$0")"
awk -F'\t' '
    NR == 1 || /^#/ { next }
    {
        t = $2
        if (!(t in n)) { order[++k] = t; first[t] = (NF >= 11 ? $11 : "?") }
        n[t]++; wall[t] += $3; cpu[t] += $4; runs[t] += $5
        cov[t] = $6; last[t] = $9; len[t] = $3; start[t] = (NF >= 11 ? $11 : "?")
        if ($10 != 0) crashes[t]++
    }
    END {
        print "| target | runs logged | wall h | CPU h | executions | edges: first logged start → latest end | latest run: start → end | its last new input | crashes |"
        print "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        for (i = 1; i <= k; i++) {
            t = order[i]
            printf "| `%s` | %d | %.2f | %.2f | %.0f | %s → %s | %s → %s | %s s of %s s | %d |\n",
                t, n[t], wall[t] / 3600, cpu[t] / 3600, runs[t], first[t], cov[t], start[t], cov[t], last[t], len[t], crashes[t] + 0
        }
    }' campaigns.tsv
