"""`python -m sandbox`: serve the vendor sandbox on 127.0.0.1."""

from __future__ import annotations

import logging

import typer
import uvicorn

from sandbox.app import create_app
from trialist.settings import get_settings

cli = typer.Typer(add_completion=False, help="Local emulators of the four vendor APIs.")


@cli.command()
def serve(
    port: int | None = typer.Option(None, help="Port (default: SANDBOX_PORT)."),
    db: str | None = typer.Option(None, help="SQLite file (default: DATA_DIR/sandbox.db)."),
    seed: int | None = typer.Option(None, help="Seed for fault draws (default: SANDBOX_SEED)."),
) -> None:
    """Serve Salesforce, HubSpot, ChiliPiper and Amplitude under /salesforce, /hubspot, ..."""
    settings = get_settings()
    db_path = db or str(settings.data_dir / "sandbox.db")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(db_path=db_path, seed=settings.sandbox_seed if seed is None else seed)
    # The sandbox binds loopback only: it has fake credentials and accepts any caller.
    uvicorn.run(app, host="127.0.0.1", port=port or settings.sandbox_port, log_level="warning")


if __name__ == "__main__":
    cli()
