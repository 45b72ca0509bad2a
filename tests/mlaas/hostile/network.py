"""Hostile: tries to open sockets (TCP to localhost, a UDP socket, a Unix socket pair).

`export_state` reports each attempt: the exception's name, or "opened"."""

import socket

from kernel.mlaas import MemoryAdvisor


def attempt(open_socket) -> str:
    try:
        open_socket()
    except OSError as exc:
        return type(exc).__name__
    return "opened"


def _tcp():
    with socket.create_connection(("127.0.0.1", 9), timeout=0.1):
        pass


ATTEMPTS = {
    "tcp": _tcp,
    "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close(),
    "unix pair": lambda: [s.close() for s in socket.socketpair()],
}


class Network(MemoryAdvisor):
    name = "network"

    def export_state(self):
        return {what: attempt(open_socket) for what, open_socket in ATTEMPTS.items()}
