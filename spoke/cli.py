"""The ``spoke`` command."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from schemas.clock import ms_to_text
from spoke.keygen import generate_org_keys

app = typer.Typer(
    name="spoke",
    help="The agent each organisation runs: outbox and inbox folders, keys, status.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def keygen(
    org: Annotated[str, typer.Option(help="Organisation id, e.g. jl.cc")],
    out: Annotated[Path, typer.Option(help="Folder for the key files (created 0700)")],
    valid_days: Annotated[int, typer.Option(help="Validity of the keys in days")] = 730,
    force: Annotated[
        bool, typer.Option(help="Replace existing keys (the old ones are lost)")
    ] = False,
) -> None:
    """Make the organisation's signing and encryption key pairs (private files mode 0600)."""
    try:
        paths, public = generate_org_keys(
            org, out, now=time.time_ns() // 1_000_000, valid_days=valid_days, overwrite=force
        )
    except (ValueError, FileExistsError, PermissionError) as exc:
        typer.echo(f"spoke keygen: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"organisation   {org}")
    typer.echo(f"signing key    {paths.sign_key} (private, 0600)  kid {public.sign_kid}")
    typer.echo(f"encryption key {paths.enc_key} (private, 0600)  kid {public.enc_kid}")
    typer.echo(f"public keys    {paths.public}")
    typer.echo(f"valid          {ms_to_text(public.not_before)} .. {ms_to_text(public.not_after)}")
    typer.echo("Hand the public key file to the hub operator; keep the .key files on this server.")
    typer.echo(public.dump().decode(), nl=False)


@app.command()
def run(
    config: Annotated[Path, typer.Option(help="Spoke configuration file")],
) -> None:
    """Run the spoke agent (outbox -> hub -> inbox)."""
    typer.echo(
        f"spoke run: the spoke agent is not built yet (issue 4); config {config} was not read",
        err=True,
    )
    raise typer.Exit(2)


def main() -> None:
    app(prog_name="spoke")


if __name__ == "__main__":
    main()
