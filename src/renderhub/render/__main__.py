"""Entry point: `python -m renderhub.render --handshake-port N --inspector-port M ...`."""

from renderhub.render.server import main

main()
