#!/usr/bin/env bash
# Regenerate the transitive pins of requirements/<group>.txt from its "# direct" pins.
#   bash requirements/lock.sh [group ...]      (default: base sim ros dev colcon)
# Each group is resolved in a throw-away venv on top of the groups it is installed with (see
# UNDER below), and only the distributions those groups do not already pin are written. Run it on
# the machine kind CI uses (Python 3.11, Linux x86_64) and commit the result; the bootstrap
# reinstalls everything when a lock file changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
declare -A UNDER=([base]="" [sim]="base" [ros]="base" [dev]="base" [colcon]="base dev")
groups=("$@"); [ ${#groups[@]} -gt 0 ] || groups=(base sim ros dev colcon)
PYTHON=${PYTHON:-python3}
quiet() { "$@" 2>&1 | { grep -v -E "^WARNING: Location '.*' is ignored|^Requirement already satisfied" || true; }; }

for g in "${groups[@]}"; do
  [ -f "$g.txt" ] || { echo "lock.sh: no requirements/$g.txt" >&2; exit 2; }
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  echo "lock.sh: resolving $g (on top of: ${UNDER[$g]:-nothing})"
  "$PYTHON" -m venv "$tmp/venv"
  py="$tmp/venv/bin/python"
  quiet "$py" -m pip install -q -r build.txt
  args=()
  for u in ${UNDER[$g]}; do args+=(-r "$u.txt"); done
  # the direct pins: lines between "# direct" and "# transitive"
  sed -n '/^# direct/,/^# transitive/p' "$g.txt" | grep -v '^#' > "$tmp/direct.txt"
  quiet "$py" -m pip install -q "${args[@]}" -r "$tmp/direct.txt"
  # every real (.dist-info) distribution; ROS wheels also carry .egg-info aliases (rclpy==...) that
  # are not installable by themselves, so those are skipped
  "$py" - "$tmp/direct.txt" ${UNDER[$g]} <<'PY' > "$tmp/transitive.txt"
import importlib.metadata as md, pathlib, re, sys
norm = lambda n: re.sub(r'[-_.]+', '-', n).lower()
def pinned(path):
    names = set()
    for line in open(path):
        line = line.split('#')[0].strip()
        if line:
            names.add(norm(re.split(r'[\[=<>~! ]', line, maxsplit=1)[0]))
    return names
known = {'pip', 'setuptools'} | pinned(sys.argv[1])
for u in sys.argv[2:]:
    known |= pinned(u + '.txt')
out = {}
for d in md.distributions():
    if pathlib.Path(str(d._path)).suffix != '.dist-info':
        continue
    name = d.metadata['Name']
    if norm(name) not in known:
        out[norm(name)] = f'{name}=={d.version}'
print('\n'.join(out[k] for k in sorted(out)))
PY
  sed -n '1,/^# transitive/p' "$g.txt" > "$tmp/new.txt"
  grep -v '^$' "$tmp/transitive.txt" >> "$tmp/new.txt" || true
  mv "$tmp/new.txt" "$g.txt"
  rm -rf "$tmp"; trap - EXIT
  echo "lock.sh: wrote requirements/$g.txt"
done
