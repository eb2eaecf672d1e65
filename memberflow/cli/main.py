"""The assembled ``memberflow`` application: importing a command group registers its commands."""

from memberflow.cli import data, demo, models, ops, outreach  # noqa: F401  (registration)
from memberflow.cli.base import app

__all__ = ["app"]


if __name__ == "__main__":  # pragma: no cover
    app()
