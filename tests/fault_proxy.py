"""tools/fault-proxy from the tests: a loopback proxy in front of the share that counts the
bytes and frames it forwards and fires the faults armed for its first connections."""

import json
import socket
import subprocess

from lambda_harness import binary


class Proxy:
    """tools/fault-proxy in front of the share (127.0.0.1:445), with faults armed from the
    command line for its first connections."""

    def __init__(self, *faults: str, connections: int = 1):
        args = [str(binary("fault-proxy")), "--upstream", "127.0.0.1:445"]
        for f in faults:
            args += ["--fault", f, "--fault-connections", str(connections)]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.process.stdout.readline()
        assert line.startswith("listening="), line
        fields = dict(kv.split("=", 1) for kv in line.split())
        self.port = int(fields["listening"].rsplit(":", 1)[1])
        self.control = fields["control"]

    def stats(self) -> dict:
        host, port = self.control.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"stats\n")
            return json.loads(s.makefile().readline())

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
