"""The client command the conformance suite runs per scenario: hands its arguments and environment
to the resident driver (`conformance_client.py --serve SOCKET`) and relays what the driver's fork
prints and its exit code.

Run with `python -S`: it imports only the standard library, so each scenario costs a process of a
few milliseconds instead of a fresh interpreter importing mcpgw and the mcp SDK (about a second of
CPU, times every scenario of the suite).
"""

import json
import os
import socket
import sys

MARK = b"\0EXIT "


def main() -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as driver:
        driver.connect(os.environ["MCPGW_CONFORMANCE_DRIVER"])
        request = {"argv": sys.argv[1:], "env": dict(os.environ)}
        driver.sendall(json.dumps(request).encode() + b"\n")
        received = bytearray()
        while chunk := driver.recv(65536):
            received += chunk
    output, marked, code = bytes(received).rpartition(MARK)
    if not marked:  # the fork died before saying how it ended
        sys.stderr.buffer.write(received)
        print("conformance shim: the driver ended without an exit code", file=sys.stderr)
        return 1
    sys.stderr.buffer.write(output)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
