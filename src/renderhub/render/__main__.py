"""Entry point: `python -m renderhub.render --config FILE [--ports-file FILE] ...` (see server.main)."""

from renderhub.render.server import main

main()
