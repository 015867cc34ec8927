"""A request to a hivegen socket, with the standard library only (no aiohttp): what a
container does with curl, for the demo and for tools that forward to the socket."""

from __future__ import annotations

import http.client
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("hive", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        # Through the directory's fd: a socket path may be longer than bind/connect take.
        fd = os.open(self.unix_path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(f"/proc/self/fd/{fd}/{self.unix_path.name}")
            except OSError:
                sock.close()
                raise
        finally:
            os.close(fd)
        self.sock = sock


def ask(path: Path, method: str, url: str, body: object = None, *, timeout: float = 60.0) -> Answer:
    """One HTTP request over the unix socket at `path`, with a JSON body if given."""
    connection = UnixConnection(path, timeout)
    data = None if body is None else json.dumps(body).encode()
    try:
        connection.request(method, url, body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return Answer(response.status, response.read())
    finally:
        connection.close()
