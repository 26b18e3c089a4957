"""An example of bringing your own agent and environment to tag_actors, outside the package.

Use them from a config as ``agent = "my_tag_plugins.agents:LinearPG"`` and
``env.kind = "my_tag_plugins.envs:Beacons"`` with this folder's parent on ``PYTHONPATH`` (every process imports
them), or install a package that declares them as entry points (see docs/04_your_own_agents.md).
"""
