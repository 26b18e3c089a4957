"""tag_actors: TAG's LevelEnv as a network protocol; every agent at every level is its own process."""

__version__ = "0.1.0"
