#!/usr/bin/env bash
# API reference of tag_actors, generated from its docstrings by pdoc (pip install -e .[dev]) into docs/api/
# (or the folder given as $1). tests/test_docs.py builds it and checks that every public name has a docstring.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/api}"
python -m pdoc --docformat markdown --no-show-source -o "$out" \
    tag_actors tag_actors.agents tag_actors.agents.base tag_actors.agents.nets tag_actors.agents.settings \
    tag_actors.agents.ppo tag_actors.agents.mappo tag_actors.agents.learner tag_actors.envs tag_actors.envs.base \
    tag_actors.config tag_actors.checks tag_actors.pz_level tag_actors.spaces
echo "API reference in $out/index.html"
