"""The demo's stand-in for the VPC's security groups: a loopback TCP forwarder per network path
(the functions to the file server on 445, the functions to the domain controller on 636) that
accepts connections exactly while the template's rules allow that path.

Samba binds 127.0.0.1 only, so the demo's file server is another loopback address (127.0.0.2 when
it is free) that only the forwarder serves: while the path is closed a connection there is
refused, as a security group would drop it. LDAPS cannot move to another address (the DC's
certificate names 127.0.0.1, dc1.example.test and localhost), so its forwarder listens on
127.0.0.1 at a port of its own and the template's LdapsUrl points there.

A closed forwarder keeps its address bound (not listening): connections are refused, and no other
process (another demo run) can take the address meanwhile. Closing also cuts the connections it
carries: a function's pooled SMB connection does not outlive the rule (on AWS it would not
survive the minutes between the rule's delete and the next request either).
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
import threading
from dataclasses import dataclass, field


class Forwarder:
    """host:port -> target_host:target_port, accepting only while open."""

    def __init__(self, name: str, host: str, port: int, target: tuple[str, int], sock: socket.socket):
        self.name, self.host, self.port, self.target = name, host, port, target
        self._reserved: socket.socket | None = sock  # bound, not listening: refuses connections
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket, list[threading.Thread]]] = []
        self.connections = 0  # accepted while open (for the report)

    @classmethod
    def reserve(cls, name: str, hosts: list[str], port: int, target: tuple[str, int]) -> Forwarder:
        """Bind the first free host:port of `hosts` (port 0: any free port). Without SO_REUSEADDR, so
        an address another run holds is skipped."""
        errors = []
        for host in hosts:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((host, port))
            except OSError as e:
                sock.close()
                errors.append(f"{host}:{port} {e.strerror}")
                continue
            return cls(name, host, sock.getsockname()[1], target, sock)
        raise RuntimeError(f"no free loopback address for the {name} forwarder: {'; '.join(errors[:3])}")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_open(self) -> bool:
        return self._listener is not None

    def open(self) -> None:
        if self._listener is not None:
            return
        listener = self._reserved or self._bind_again()
        self._reserved = None
        listener.listen(64)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name=f"forward-{self.name}", daemon=True)
        self._thread.start()

    def close(self, keep_reserved: bool = True) -> None:
        """Stop accepting and cut every connection; the address stays bound (refusing) unless
        keep_reserved is false."""
        if self._listener is not None:
            self._wake_w.send(b"x")
            self._thread.join()
            self._wake_r.recv(16)
            self._listener.close()
            self._listener = None
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b, threads in pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            for t in threads:
                t.join()
            a.close()
            b.close()
        if keep_reserved:
            if self._reserved is None:
                self._reserved = self._bind_again()
        else:
            if self._reserved is not None:
                self._reserved.close()
                self._reserved = None
            self._wake_r.close()
            self._wake_w.close()

    def _bind_again(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Connections this forwarder closed may linger in TIME_WAIT on the address.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        return sock

    def _accept_loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    try:
                        client, _ = self._listener.accept()
                    except OSError:
                        continue
                    self._connect(client)
        finally:
            sel.close()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threads = [threading.Thread(target=_pump, args=(client, upstream), daemon=True),
                   threading.Thread(target=_pump, args=(upstream, client), daemon=True)]
        with self._lock:
            self._pairs.append((client, upstream, threads))
            self.connections += 1
        for t in threads:
            t.start()

    def accepts(self) -> bool:
        """A TCP connect to the forwarder's address succeeds (the witness of the path)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=5):
                return True
        except OSError:
            return False


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(1 << 16)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


# ── the security groups' rules ───────────────────────────────────────────────────────────────

@dataclass
class Rule:
    """One resolved ingress or egress rule of a security group."""

    owner: str            # the logical id that made it (the group for inline rules)
    direction: str        # "ingress" or "egress"
    group: str            # the group id the rule belongs to
    protocol: str
    from_port: int
    to_port: int
    cidr: str | None = None
    peer_group: str | None = None  # SourceSecurityGroupId / DestinationSecurityGroupId

    def allows(self, port: int) -> bool:
        return self.protocol in ("tcp", "6", "-1") and (self.protocol == "-1" or self.from_port <= port <= self.to_port)

    def covers(self, ip: str) -> bool:
        return self.cidr is not None and ipaddress.ip_address(ip) in ipaddress.ip_network(self.cidr, strict=False)


def rules_of(logical_id: str, resource_type: str, props: dict, group_id: str | None = None) -> list[Rule]:
    """The rules a resource makes: a security group's inline ingress/egress, or a standalone
    AWS::EC2::SecurityGroupIngress / SecurityGroupEgress."""

    def one(direction, spec, group):
        peer = spec.get("SourceSecurityGroupId") if direction == "ingress" else spec.get("DestinationSecurityGroupId")
        return Rule(logical_id, direction, group, str(spec.get("IpProtocol", "-1")).lower(),
                    int(spec.get("FromPort", 0) or 0), int(spec.get("ToPort", 65535) or 65535),
                    spec.get("CidrIp"), peer)

    if resource_type == "AWS::EC2::SecurityGroup":
        return ([one("ingress", s, group_id) for s in props.get("SecurityGroupIngress") or []] +
                [one("egress", s, group_id) for s in props.get("SecurityGroupEgress") or []])
    if resource_type == "AWS::EC2::SecurityGroupIngress":
        return [one("ingress", props, props.get("GroupId"))]
    if resource_type == "AWS::EC2::SecurityGroupEgress":
        return [one("egress", props, props.get("GroupId"))]
    return []


@dataclass
class Path:
    """A path the functions need: from their security groups to a port on a peer that is either
    a security group outside the stack (the file server: its ingress must allow it too) or an
    address (the domain controller, whose own security group is not the stack's)."""

    name: str
    port: int
    forwarder: Forwarder
    peer_group: str | None = None
    peer_ip: str | None = None
    rules: list[str] = field(default_factory=list)  # the rules that allow it now

    def describe(self) -> str:
        peer = f"security group {self.peer_group}" if self.peer_group else self.peer_ip
        return f"{self.name} (tcp {self.port} to {peer}; forwarder {self.forwarder.address} -> " \
               f"{self.forwarder.target[0]}:{self.forwarder.target[1]})"


class Network:
    """The rules that exist (from every stack the demo runs) and the paths they open."""

    def __init__(self):
        self.rules: dict[tuple[str, str], list[Rule]] = {}  # (stack, logical id) -> rules
        self.source_groups: set[str] = set()               # the functions' security group ids
        self.paths: list[Path] = []

    def add(self, stack: str, logical_id: str, rules: list[Rule]) -> None:
        self.rules[(stack, logical_id)] = rules

    def remove(self, stack: str, logical_id: str) -> None:
        self.rules.pop((stack, logical_id), None)

    def evaluate(self) -> list[tuple[Path, bool]]:
        """Open or close each forwarder as the rules now say; returns the paths that changed."""
        every = [r for rules in self.rules.values() for r in rules]
        changed = []
        for path in self.paths:
            allowed = []
            for src in self.source_groups:
                egress = [r for r in every if r.direction == "egress" and r.group == src and r.allows(path.port) and
                          ((path.peer_group and r.peer_group == path.peer_group) or
                           (path.peer_ip and r.covers(path.peer_ip)) or r.cidr == "0.0.0.0/0")]
                if not egress:
                    continue
                if path.peer_group:
                    ingress = [r for r in every if r.direction == "ingress" and r.group == path.peer_group and
                               r.allows(path.port) and r.peer_group == src]
                    if not ingress:
                        continue
                    allowed = sorted({r.owner for r in egress[:1] + ingress[:1]})
                else:
                    allowed = sorted({egress[0].owner})
                break
            path.rules = allowed
            was = path.forwarder.is_open
            if allowed and not was:
                path.forwarder.open()
            elif not allowed and was:
                path.forwarder.close()
            if bool(allowed) != was:
                changed.append((path, bool(allowed)))
        return changed

    def open_all(self) -> None:
        """What an operator does before retrying a failed delete: put the rules back."""
        for path in self.paths:
            path.forwarder.open()

    def shutdown(self) -> None:
        for path in self.paths:
            path.forwarder.close(keep_reserved=False)
