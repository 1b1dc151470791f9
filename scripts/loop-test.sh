#!/usr/bin/env bash
# Runs one fault test N times in a row and counts passes/failures (not part of CI).
#   scripts/loop-test.sh N dist/test/fault/cluster.test.js ['name pattern']
# Each run's TAP output goes to ${LOOP_OUT:-/tmp/confsync-loop}/run-<i>.tap; diagnostics
# (the `# ` lines the test prints) are echoed per run.
set -uo pipefail
n="${1:?runs}"; file="${2:?test file}"; pattern="${3:-}"
out="${LOOP_OUT:-/tmp/confsync-loop}"; mkdir -p "$out"
pass=0; fail=0; todo_fail=0
for i in $(seq 1 "$n"); do
  args=(--test --test-concurrency=1)
  [[ -n "$pattern" ]] && args+=(--test-name-pattern "$pattern")
  start=$(date +%s)
  node "${args[@]}" "$file" > "$out/run-$i.tap" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  # A todo test that fails still exits 0: count those separately.
  if grep -q '^ *not ok .*# TODO' "$out/run-$i.tap"; then todo_fail=$((todo_fail + 1)); fi
  if [[ $rc -eq 0 ]]; then pass=$((pass + 1)); verdict=pass; else fail=$((fail + 1)); verdict=FAIL; fi
  echo "run $i: $verdict (${secs} s, load $(cut -d' ' -f1 /proc/loadavg))"
  grep -E '^ *# (m[0-9]|writes|put ack|leader|daemon|gap)' "$out/run-$i.tap" | sed 's/^ */    /'
  grep -E '^ *not ok' "$out/run-$i.tap" | sed 's/^ */    /'
done
echo "runs $n: pass $pass, fail $fail, todo-failures $todo_fail"
# Longest gap between versions on disk per run (tests that print gap_ms=), as a distribution.
gaps=$(grep -ho 'gap_ms=[0-9]*' "$out"/run-*.tap 2>/dev/null | cut -d= -f2 | sort -n | tr '\n' ' ')
[[ -n "$gaps" ]] && echo "gap_ms (sorted, one per test run): $gaps"
true
