"""Hosts for the system tests: network namespaces on one bridge, each with an address of its own.

    hosts = Hosts("calc1a2b", ["db", "broker", "core", "workers"])   # 198.18.N.2, .3, ...
    hosts.addr("db")                      # "198.18.N.2"
    hosts.wrap("core", argv)              # argv run inside the core namespace, where the name
                                          # "db" resolves to db's address (and so on)
    hosts.remove()                        # every namespace, link and the bridge, also after a failure

Names: `ip netns exec` puts /etc/netns/NS/hosts in place of /etc/hosts, so each host finds the
others by name (TLS clients that verify names need that). The bridge lives in this process's namespace with the address .1, so the test reaches every host.
Addresses come from 198.18.0.0/15, the range set aside for test networks (RFC 2544), one /24 per
Hosts: traffic between them never leaves this machine.
"""

import atexit
import os
import shutil
import subprocess
import zlib


def _ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


class Hosts:
    def __init__(self, tag, names):
        self.tag = tag  # up to 8 characters: interface names are at most 15
        self.names = list(names)
        self.subnet = f"198.18.{zlib.crc32(tag.encode()) % 250 + 1}"
        self.bridge = f"br{tag}"
        self.created = []  # ("ns", name) or ("link", name), to remove in reverse order
        atexit.register(self.remove)
        try:
            self._create()
        except BaseException:
            self.remove()
            raise

    def ns(self, name):
        return f"calc-{self.tag}-{name}"

    def addr(self, name):
        return f"{self.subnet}.{self.names.index(name) + 2}"

    def wrap(self, name, argv):
        return ["ip", "netns", "exec", self.ns(name), *argv]

    def _create(self):
        _ip("link", "add", self.bridge, "type", "bridge")
        self.created.append(("link", self.bridge))
        _ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, name in enumerate(self.names):
            ns = self.ns(name)
            _ip("netns", "add", ns)
            self.created.append(("ns", ns))
            outside, inside = f"v{self.tag}{i}", f"v{self.tag}{i}i"
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            self.created.append(("link", outside))
            _ip("link", "set", inside, "netns", ns)
            _ip("link", "set", outside, "master", self.bridge)
            _ip("link", "set", outside, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.addr(name)}/24", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")
        hosts = "127.0.0.1 localhost\n::1 localhost\n" + "".join(
            f"{self.addr(n)} {n}\n" for n in self.names)
        for name in self.names:
            d = f"/etc/netns/{self.ns(name)}"
            os.makedirs(d, exist_ok=True)
            self.created.append(("dir", d))
            with open(f"{d}/hosts", "w") as f:
                f.write(hosts)

    def remove(self):
        while self.created:
            kind, name = self.created.pop()
            if kind == "ns":
                _ip("netns", "del", name, check=False)
            elif kind == "dir":
                shutil.rmtree(name, ignore_errors=True)
            else:
                _ip("link", "del", name, check=False)

    def leftovers(self):
        """Namespaces and links of this Hosts still present (none after remove())."""
        out = _ip("netns", "list", check=False).stdout + _ip("-o", "link", "show", check=False).stdout
        dirs = os.listdir("/etc/netns") if os.path.isdir("/etc/netns") else []
        return [w for w in out.split() + dirs
                if f"calc-{self.tag}-" in w or self.tag in w.rstrip(":").split("@")[0]]
