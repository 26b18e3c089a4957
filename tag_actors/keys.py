"""CURVE keys for runs spread over hosts ("Ironhouse": every link encrypted, both ends authenticated).

    python -m tag_actors.keys KEYS_DIR HOST [HOST ...]

writes ``HOST.key`` (public) and ``HOST.key_secret`` (secret) for each host. Copy every ``.key`` file to every
host and each ``.key_secret`` only to its own host, into the folder named by ``placement.keys_dir``. A process
presents its host's key; a server admits only the public keys of the run's hosts, so an unknown key is refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tag_actors.config import Config, ConfigError
from tag_actors.topology import Plan, host_of
from tag_actors.transport import Security, generate_keys


def security_for(cfg: Config, plan: Plan, host: str, base: Path) -> Security:
    """This host's keys, the servers' public keys by child, and the admitted client keys."""
    import zmq.auth

    keys_dir = Path(cfg.placement.keys_dir)
    if not keys_dir.is_absolute():
        keys_dir = base / keys_dir

    def load(name: str, secret: bool) -> tuple[bytes, bytes | None]:
        path = keys_dir / f"{name}.key{'_secret' if secret else ''}"
        if not path.exists():
            what = f"this host's secret key ({name!r})" if secret else f"the public key of host {name!r}"
            raise ConfigError(
                f"{cfg.source}: placement.curve needs {path}, {what}. Keys are made once, on one host "
                f"(python -m tag_actors.keys {cfg.placement.keys_dir} {' '.join(cfg.placement.hosts)}), then "
                f"copied: every *.key to every host, each NAME.key_secret only to host NAME, into "
                f"placement.keys_dir ({keys_dir}). Do not make keys again on this host alone: the other hosts "
                "would not know them, and every CURVE handshake between them would fail")
        return zmq.auth.load_certificate(str(path))

    public, secret = load(host, secret=True)
    hosts = list(cfg.placement.hosts) or [host]
    publics = {h: load(h, secret=False)[0] for h in hosts}
    servers = {c: publics[host_of(cfg, plan, plan.process_of(c))] for c, p in plan.parent.items() if p is not None}
    return Security(public, secret, servers, list(publics.values()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tag_actors.keys", description=__doc__.splitlines()[0])
    p.add_argument("keys_dir", type=Path)
    p.add_argument("hosts", nargs="+")
    args = p.parse_args(argv)
    for host in args.hosts:
        generate_keys(args.keys_dir, host)
        print(f"{args.keys_dir / host}.key (public), {args.keys_dir / host}.key_secret (secret: only on {host})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
