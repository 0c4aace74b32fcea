"""Podman and podman-compose for the compose test: a private engine configuration, one compose
project in a copy of the repository, and the removal of everything that project created.

This VM withholds CAP_SYS_RESOURCE and has a hybrid cgroup layout (see ../shared/CONTAINERS.md):
podman works with runc, the cgroupfs manager and ulimits at or below the hard limits, set here in a
containers.conf named by CONTAINERS_CONF, so nothing under /etc is changed.
"""

import os
import resource
import shutil
import subprocess
import time

import harness

BASE_IMAGE = "localhost/debian:12"
IMAGES = ("localhost/calc", "localhost/calc-postgres", "localhost/calc-rabbitmq")


def containers_conf(path):
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 20000 if nofile == resource.RLIM_INFINITY else min(nofile, 1048576)
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    with open(path, "w") as f:
        f.write(
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            "[network]\n"
            'network_backend = "netavark"\n'
        )


def copy_tree(src, dst):
    """The files of a fresh clone (and new ones git does not ignore), or the tree without build output."""
    try:
        out = subprocess.run(["git", "-C", src, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             check=True, capture_output=True).stdout
        files = [f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = None
    if files is None:
        ignore = shutil.ignore_patterns(".git", "build", ".cluster", ".env", "__pycache__")
        shutil.copytree(src, dst, ignore=ignore, symlinks=True)
        return
    for f in files:
        s, d = os.path.join(src, f), os.path.join(dst, f)
        if not os.path.lexists(s):
            continue  # deleted in the work tree, not yet in git
        os.makedirs(os.path.dirname(d), exist_ok=True)
        shutil.copy2(s, d, follow_symlinks=False)


class Engine:
    """podman with the test's own configuration; every command's output goes to one log file."""

    def __init__(self, root):
        self.root = root
        self.log_path = os.path.join(root, "podman.log")
        conf = os.path.join(root, "containers.conf")
        containers_conf(conf)
        self.env = dict(os.environ, CONTAINERS_CONF=conf)

    def run(self, *args, check=True, timeout=600, capture=False, cwd=None, env=None):
        with open(self.log_path, "a") as log:
            log.write(f"\n$ {' '.join(args)}\n")
            log.flush()
            r = subprocess.run(
                list(args), cwd=cwd, env=env or self.env, stdin=subprocess.DEVNULL, timeout=timeout,
                stdout=subprocess.PIPE if capture else log, stderr=log, text=True,
            )
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited with {r.returncode}; log:\n"
                                 + harness.tail(self.log_path, 40))
        return r

    def output(self, *args, **kw):
        return self.run(*args, capture=True, **kw).stdout

    def image_ids(self):
        return set(self.output("podman", "images", "-a", "-q", "--no-trunc").split())

    def ensure_base_image(self, source_dir):
        """Builds BASE_IMAGE with scripts/base-image when it is missing; a present one is a cache."""
        if self.run("podman", "image", "exists", BASE_IMAGE, check=False).returncode == 0:
            created = self.output("podman", "image", "inspect", "-f", "{{.Created}}", BASE_IMAGE).strip()
            print(f"compose test: reusing the cached base image {BASE_IMAGE} (built {created})")
            return
        t0 = time.monotonic()
        self.run(os.path.join(source_dir, "scripts", "base-image"), BASE_IMAGE, timeout=900)
        print(f"compose test: built the base image {BASE_IMAGE} in {time.monotonic() - t0:.0f}s; "
              "it is kept as a cache for later runs")


class Project:
    """One podman-compose project in its own copy of the repository."""

    def __init__(self, engine, name, workdir, env):
        self.engine = engine
        self.name = name
        self.workdir = workdir
        self.env = dict(engine.env, **env)

    def compose(self, *args, timeout=1200, check=True):
        return self.engine.run("podman-compose", "-p", self.name, *args, cwd=self.workdir,
                               env=self.env, timeout=timeout, check=check)

    def container(self, service, n=1):
        return f"{self.name}_{service}_{n}"

    def containers(self):
        out = self.engine.output("podman", "ps", "-a", "--format", "{{.Names}}",
                                 "--filter", f"label=io.podman.compose.project={self.name}")
        return sorted(out.split())

    def healthy(self, name):
        """Runs the container's healthcheck now (this machine has no systemd to run it on a timer)."""
        return self.engine.run("podman", "healthcheck", "run", name, check=False, timeout=60).returncode == 0

    def wait_healthy(self, names, timeout):
        pending = set(names)

        def all_healthy():
            for n in sorted(pending):
                if self.healthy(n):
                    pending.discard(n)
            return not pending

        try:
            harness.wait_for(all_healthy, timeout, "healthy containers", interval=1.0)
        except AssertionError as e:
            raise AssertionError(f"{e}: still not healthy: {sorted(pending)}\n{self.logs(sorted(pending))}")

    def logs(self, names=None, lines=30):
        out = []
        for n in names or self.containers():
            r = self.engine.run("podman", "logs", "--tail", str(lines), n, check=False, capture=True)
            out.append(f"--- {n} ---\n{r.stdout}")
        return "\n".join(out)

    def volumes(self):
        out = self.engine.output("podman", "volume", "ls", "--format", "{{.Name}}")
        return sorted(v for v in out.split() if v.startswith(f"{self.name}_"))

    def remove_everything(self, images_before, tag):
        """Containers, networks, volumes and the images built since images_before (not the base)."""
        run = self.engine.run
        if os.path.isdir(self.workdir):
            self.compose("down", "-v", timeout=300, check=False)
        for n in self.containers():
            run("podman", "rm", "-f", "-v", n, check=False)
        for v in self.volumes():
            run("podman", "volume", "rm", "-f", v, check=False)
        nets = self.engine.output("podman", "network", "ls", "--format", "{{.Name}}").split()
        for net in nets:
            if net.startswith(f"{self.name}_"):
                run("podman", "network", "rm", "-f", net, check=False)
        for image in IMAGES:
            run("podman", "rmi", "-f", f"{image}:{tag}", check=False)
        base = self.engine.output("podman", "image", "inspect", "-f", "{{.Id}}", BASE_IMAGE).strip()
        leftovers = self.engine.image_ids() - images_before - {base}
        if leftovers:
            run("podman", "rmi", "-f", *sorted(leftovers), check=False)
