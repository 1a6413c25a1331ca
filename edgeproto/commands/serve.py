"""``edgeproto serve``: the on-device explainer behind an HTTP server and a web page. No torch."""

from __future__ import annotations

import click

from edgeproto.commands.options import artifact_options


@click.command()
@click.argument("bundle", type=click.Path())
@artifact_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on (loopback by default; 0.0.0.0 exposes it to the network)")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("-k", "--top", "k", type=int, default=3, show_default=True, help="prototypes per explanation")
@click.option("--max-bytes", type=click.IntRange(1024, 256 << 20), default=8 << 20, show_default=True,
              help="largest request body accepted (413 above)")
@click.option("--rate", type=float, default=20.0, show_default=True,
              help="requests per second per client, sustained (429 above; 0: no limit)")
@click.option("--burst", type=click.IntRange(1, 100_000), default=40, show_default=True,
              help="requests a client may send at once before --rate applies")
def serve(bundle: str, target: str, precision: str, guard: str, device: str | None, host: str, port: int, k: int,
          max_bytes: int, rate: float, burst: int) -> None:
    """Serve explanations over HTTP: a web page at / and POST /explain (JSON)."""
    from edgeproto.device.explainer import Explainer
    from edgeproto.device.server import check_installed, serve as run_server
    from edgeproto.errors import EdgeprotoError

    if rate < 0:
        raise EdgeprotoError(f"--rate must be >= 0, got {rate}")
    check_installed()
    with Explainer.open(bundle, target=target, precision=precision, guard=guard, device=device, k=k) as explainer:
        where = f"http://{host}:{port}/"
        click.echo(f"serving {explainer.bundle.root} on {where} ({explainer.info['name']} {explainer.info['precision']}"
                   f"); Ctrl-C stops", err=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            click.echo(f"warning: listening on {host}: reachable from the network, without authentication", err=True)
        run_server(explainer, host=host, port=port, max_bytes=max_bytes, rate=rate, burst=burst)
