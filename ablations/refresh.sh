#!/usr/bin/env bash
# Refresh forks after meow_continuous_action.py changed (ablations/README.md).
#   ablations/refresh.sh [NAME ...]         apply each ablations/NAME.patch with fuzz into fork_NAME.py and,
#                                           where every hunk applied, rewrite the patch from the result
#   ablations/refresh.sh --diff NAME ...    rewrite the patches from fork_NAME.py as it is (after a hand fix)
# Without names: every patch under ablations/. A rewritten patch keeps its header (the lines above `--- `).
set -euo pipefail
cd "$(dirname "$0")/.."
SCRIPT=meow_continuous_action.py

rediff() {  # header of ablations/$1.patch + diff of the script against fork_$1.py
    local patch_file=ablations/$1.patch fork=fork_$1.py rc=0
    [ -f "$fork" ] || { echo "error: no $fork to diff (run ablations/refresh.sh $1 first)" >&2; exit 2; }
    sed -n '/^--- /q;p' "$patch_file" > "$patch_file.tmp"
    diff -u --label "$SCRIPT" --label "$fork" "$SCRIPT" "$fork" >> "$patch_file.tmp" || rc=$?
    [ "$rc" -le 1 ] || { rm -f "$patch_file.tmp"; echo "error: diff failed on $fork" >&2; exit 2; }
    mv "$patch_file.tmp" "$patch_file"
    echo "rewrote $patch_file from $fork"
}

only_diff=0
if [ "${1:-}" = "--diff" ]; then only_diff=1; shift; fi
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    for p in ablations/*.patch; do names+=("$(basename "$p" .patch)"); done
fi
for name in "${names[@]}"; do
    [ -f "ablations/$name.patch" ] || { echo "error: no ablations/$name.patch" >&2; exit 2; }
done

failed=()
for name in "${names[@]}"; do
    if [ "$only_diff" -eq 1 ]; then
        rediff "$name"
    elif patch --fuzz=3 --reject-file="fork_$name.py.rej" -o "fork_$name.py" "$SCRIPT" "ablations/$name.patch"; then
        rm -f "fork_$name.py.rej"
        rediff "$name"
    else
        failed+=("$name")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "not refreshed: ${failed[*]}: fix each fork_NAME.py by hand (the hunks that did not apply are in fork_NAME.py.rej), then: ablations/refresh.sh --diff ${failed[*]}" >&2
    exit 1
fi
