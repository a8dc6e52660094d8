"""`nexus` / `python -m nexus`: gevent monkey-patching first, then the command line."""


def main() -> None:
    """Patch the standard library for gevent, then run the CLI."""
    from gevent import monkey

    monkey.patch_all()

    from nexus.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
