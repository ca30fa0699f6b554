"""HTTP over the node's unix socket (DATA/troika.sock), for the Python rigs."""

import http.client
import socket


class UnixHTTP(http.client.HTTPConnection):
    """An HTTPConnection to a unix socket path; long timeouts for slow operations."""

    def __init__(self, path):
        super().__init__("localhost", timeout=600)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(600)
        self.sock.connect(self.path)
