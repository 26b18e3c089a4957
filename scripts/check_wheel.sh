#!/usr/bin/env bash
# Build the wheel, install it (not editable) into a fresh venv, and run a short training run from outside the
# checkout with the installed console scripts and a config found by name in the wheel.
#   scripts/check_wheel.sh [WORK_DIR]     (default: a temporary folder, removed at the end)
# The venv reuses the system's site-packages (torch, vmas, ...: --system-site-packages), but tag_actors itself
# must come from the wheel: the script checks where it is imported from.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="${1:-}"
if [[ -z "$WORK" ]]; then
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
unset PYTHONPATH

echo "== copy the tree (tracked and untracked, not ignored) and build the wheel"
mkdir -p "$WORK/src"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$WORK/src"
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/tag_actors-*.whl)"
echo "$WHEEL"
"$PYTHON" - "$WHEEL" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
configs = [n for n in names if n.startswith("tag_actors/configs/") and n.endswith(".toml")]
assert "tag_actors/configs/balance.toml" in configs, f"configs missing from the wheel: {names}"
print(f"wheel: {len(names)} files, {len(configs)} configs")
EOF

echo "== install into a fresh venv"
"$PYTHON" -m venv --system-site-packages "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --no-deps "$WHEEL"
cd "$WORK"  # outside the checkout: no configs/ here
where="$("$WORK/venv/bin/python" -c 'import tag_actors; print(tag_actors.__file__)')"
case "$where" in
    "$WORK/venv/"*) echo "tag_actors imported from $where";;
    *) echo "check_wheel: tag_actors imported from $where, not from the venv's wheel" >&2; exit 1;;
esac
for script in tag-actors tag-actors-eval tag-actors-keys tag-actors-plot; do
    "$WORK/venv/bin/$script" --help >/dev/null
done
echo "console scripts: ok"

echo "== a short run from the installed wheel, config by name"
"$WORK/venv/bin/tag-actors" balance --set run.total_env_steps=2048 --set env.num_envs=16 --set run.metrics=false \
    --set run.log_every_s=1 --set 'run.loggers=["csv","tensorboard","plot"]' --run-dir "$WORK/run" --quiet
test -f "$WORK/run/checkpoints/l3.0.pt"
test -f "$WORK/run/plots/returns.png"
ls "$WORK"/run/tensorboard/events.out.tfevents.* >/dev/null
test -f "$WORK/run/episodes.csv"
"$WORK/venv/bin/python" -m tag_actors.launch balance_random --serial --set run.total_env_steps=512 \
    --set env.num_envs=8 --run-dir "$WORK/run_serial" --quiet
"$WORK/venv/bin/tag-actors-eval" "$WORK/run" --episodes 2
echo "check_wheel: ok"
