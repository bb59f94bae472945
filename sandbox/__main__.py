"""`python -m sandbox`: serve the vendor sandbox (on 127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import logging

import typer
import uvicorn

from config.settings import get_settings
from sandbox.app import create_app

cli = typer.Typer(add_completion=False, help="Local emulators of the four vendor APIs.")


@cli.command()
def serve(
    host: str | None = typer.Option(
        None, help="Interface to bind (default: SANDBOX_HOST; 0.0.0.0 only inside a container)."
    ),
    port: int | None = typer.Option(None, help="Port (default: SANDBOX_PORT)."),
    db: str | None = typer.Option(None, help="SQLite file (default: DATA_DIR/sandbox.db)."),
    seed: int | None = typer.Option(None, help="Seed for fault draws (default: SANDBOX_SEED)."),
) -> None:
    """Serve Salesforce, HubSpot, ChiliPiper and Amplitude under /salesforce, /hubspot, ..."""
    settings = get_settings()
    db_path = db or str(settings.data_dir / "sandbox.db")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(db_path=db_path, seed=settings.sandbox_seed if seed is None else seed)
    # Loopback by default: the sandbox has fake credentials and accepts any caller.
    bind = host or settings.sandbox_host
    uvicorn.run(app, host=bind, port=port or settings.sandbox_port, log_level="warning")


if __name__ == "__main__":
    cli()
