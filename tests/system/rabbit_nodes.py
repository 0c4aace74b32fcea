"""Private RabbitMQ nodes for the tests that need more than the session's one broker: a cluster of
three (for failover and quorum queues) or a node with a TLS listener.

Each node runs from scripts/lib/servers like the session's broker, in a folder of its own under the
session's temporary folder, on its own loopback AMQP and distribution ports. The nodes of one set
share an Erlang cookie and one epmd (node 0's), so they find each other; nodes 1.. join node 0's
cluster. A node takes ~10 s to boot on a small machine: a test module starts its set once.

Teardown: stop() ends every node (node 0 last: its epmd serves the others); the set is in
harness.REGISTRY.servers, so an interrupted session stops it too, and the session watchdog kills
whatever still runs in the session's folder if pytest itself is killed.
"""

import os
import secrets
import subprocess
import threading
import urllib.parse

import harness


class RabbitNodes:
    def __init__(self, root, count=3, user="calc", extra_conf=None):
        """extra_conf(i) -> text added to node i's rabbitmq.conf, or None; it may use
        self.extra_ports[i], a free port reserved for each node (a TLS listener, say)."""
        self.root = root
        self.count = count
        self.dirs = [os.path.join(root, f"node{i}") for i in range(count)]
        self.ports = [harness.free_port() for _ in range(count)]
        self.dist_ports = [harness.free_port() for _ in range(count)]
        self.extra_ports = [harness.free_port() for _ in range(count)]
        self.epmd_port = harness.free_port()
        self.cookie = secrets.token_hex(20).upper()
        self.user = user
        self.password = secrets.token_hex(16)
        self.extra_conf = extra_conf
        self.log_path = os.path.join(root, "nodes.log")
        self._log_lock = threading.Lock()
        self._started = False
        os.makedirs(root, exist_ok=True)
        os.chmod(root, 0o755)

    # --- the servers CLI, with the knobs of rmq_start -----------------------------------------------
    def _servers(self, args, env=None, stdin_text=None, timeout=180, capture=False):
        full_env = dict(os.environ)
        full_env.update(env or {})
        r = subprocess.run(
            [harness.SERVERS_CLI] + [str(a) for a in args],
            input=(stdin_text + "\n") if stdin_text is not None else None,
            stdin=None if stdin_text is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
        )
        with self._log_lock, open(self.log_path, "a") as log:
            log.write(f"$ servers {' '.join(map(str, args))}\n{r.stdout}{r.stderr}")
        if r.returncode != 0:
            raise AssertionError(f"servers {' '.join(map(str, args))} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
        return r.stdout

    def _node_env(self, i):
        env = {"RMQ_COOKIE": self.cookie}
        if i > 0:
            env["RMQ_EPMD_SHARED"] = "1"
        text = self.extra_conf(i) if self.extra_conf else None
        if text:
            path = os.path.join(self.root, f"extra{i}.conf")
            with open(path, "w") as f:
                f.write(text)
            env["RMQ_EXTRA_CONF"] = path
        return env

    def start_node(self, i):
        """Start (or restart, with its data) node i; returns when it accepts AMQP connections."""
        self._servers(
            ["start-rabbitmq", self.dirs[i], self.ports[i], self.dist_ports[i], self.epmd_port, self.user],
            env=self._node_env(i),
            stdin_text=self.password,
        )

    def start(self):
        if self not in harness.REGISTRY.servers:
            harness.REGISTRY.servers.append(self)
        self._started = True
        self.start_node(0)  # first: its epmd serves every node of the set
        errors = []

        def boot(i):
            try:
                self.start_node(i)
            except AssertionError as e:
                errors.append(str(e))

        threads = [threading.Thread(target=boot, args=(i,)) for i in range(1, self.count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise AssertionError("; ".join(errors))
        for i in range(1, self.count):
            self._servers(["rabbitmq-join", self.dirs[i], self.dirs[0]])
        if self.count > 1:
            members = self.rabbitmqctl(0, "eval", "length(rabbit_nodes:all_running()).").strip()
            assert members == str(self.count), f"the cluster has {members} running nodes, not {self.count}"

    def stop(self):
        """Stop every node, node 0 (and its epmd) last; safe to call twice."""
        if not self._started:
            return
        self._started = False
        errors = []
        for d in reversed(self.dirs):
            try:
                self._servers(["stop-rabbitmq", d])
            except AssertionError as e:
                errors.append(str(e))
        if self in harness.REGISTRY.servers:
            harness.REGISTRY.servers.remove(self)
        if errors:
            raise AssertionError("; ".join(errors))

    # --- faults -------------------------------------------------------------------------------------
    def pid(self, i):
        try:
            with open(os.path.join(self.dirs[i], "rabbitmq.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def kill_node(self, i):
        """SIGKILL node i, as a crash would (the shared epmd lives on, as on a real host)."""
        harness._kill_and_wait(self.pid(i), "beam")

    # --- use ----------------------------------------------------------------------------------------
    def rabbitmqctl(self, i, *args, timeout=60):
        return self._servers(["rabbitmqctl", self.dirs[i]] + list(args), timeout=timeout)

    def create_vhost(self, name, node=0):
        self._servers(["rabbitmq-add-vhost", self.dirs[node], name, self.user])
        return name

    def url(self, i, vhost, scheme="amqp", host="127.0.0.1", port=None, user=None, password=None):
        quoted = urllib.parse.quote(vhost, safe="")
        port = port or self.ports[i]
        return f"{scheme}://{user or self.user}:{password or self.password}@{host}:{port}/{quoted}"

    def urls(self, vhost, order=None):
        """AMQP_URL with every node, in the given order of node indexes (default 0, 1, ...)."""
        return ",".join(self.url(i, vhost) for i in (order or range(self.count)))

    def node_of_port(self, port):
        return self.ports.index(port)
