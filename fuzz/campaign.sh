#!/usr/bin/env bash
# Runs fuzz targets one after another, SECONDS each, on the kept corpus, and
# appends one line per run to campaigns.tsv, so the README's figures can be
# summed from measured runs rather than remembered.
#
#   fuzz/campaign.sh SECONDS TARGET [TARGET...]   (cargo install cargo-fuzz)
#
# Columns: date, target, wall s, cpu s (user+sys), runs, cov, ft, corpus
# entries, wall s at the last NEW input, exit status (non-zero: a crash,
# saved under artifacts/TARGET/), and cov once the corpus was loaded (so
# cov minus this is what the run found).
set -u
cd "$(dirname "$0")"
secs=$1
shift
log=campaigns.tsv
[ -s "$log" ] || printf 'date\ttarget\twall_s\tcpu_s\truns\tcov\tft\tcorpus\tlast_new_s\tstatus\tcov_start\n' >"$log"

# Built once up front; FUZZ_NO_BUILD=1 keeps the binaries already built, so
# that edits to the crate made while a campaign runs do not touch it.
bin=target/x86_64-unknown-linux-gnu/release
if [ -z "${FUZZ_NO_BUILD:-}" ]; then
    RUSTC_BOOTSTRAP=1 cargo fuzz build -s none -a >&2 || exit 1
fi

for target in "$@"; do
    mkdir -p "corpus/$target" "artifacts/$target" logs
    out="logs/$target.$(date +%s).log"
    start=$(date +%s)
    # Stamp each libFuzzer line with the seconds since start.
    # New inputs go to corpus/ (kept, not committed); seeds/ holds the
    # committed starting points some targets need.
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    # Keywords the target's grammar knows, which mutation alone finds slowly.
    dict=()
    [ -f "dicts/$target.dict" ] && dict=("-dict=dicts/$target.dict")
    /usr/bin/time -f '%U %S' -o "$out.time" "$bin/$target" "corpus/$target" "${seeds[@]}" "${dict[@]}" \
        -artifact_prefix="artifacts/$target/" \
        -max_total_time="$secs" -print_final_stats=1 2>&1 |
        while IFS= read -r line; do
            printf '%s %s\n' "$(($(date +%s) - start))" "$line"
        done >"$out"
    status=${PIPESTATUS[0]}
    wall=$(($(date +%s) - start))
    cpu=$(tail -n1 "$out.time" | awk '{ printf "%.0f", $1 + $2 }')
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$out" | awk '{ print $2 }' | tail -n1)
    last=$(grep -E '#[0-9]+[[:space:]]+NEW' "$out" | tail -n1)
    cov=$(grep -oE 'cov: [0-9]+' "$out" | tail -n1 | awk '{ print $2 }')
    ft=$(grep -oE 'ft: [0-9]+' "$out" | tail -n1 | awk '{ print $2 }')
    last_new=$(printf '%s\n' "$last" | awk '{ print $1 }')
    entries=$(find "corpus/$target" -type f | wc -l)
    cov_start=$(grep -m1 'INITED' "$out" | grep -oE 'cov: [0-9]+' | awk '{ print $2 }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$target" \
        "$wall" "$cpu" "${runs:-?}" "${cov:-?}" "${ft:-?}" "$entries" "${last_new:-?}" "$status" \
        "${cov_start:-?}" >>"$log"
done
