"""Start and stop a one-node Slurm (munged, slurmctld, slurmd) on 127.0.0.1 for tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SLURM_CONF = Path("/etc/slurm/slurm.conf")
GRES_CONF = Path("/etc/slurm/gres.conf")
MUNGE_PID = Path("/run/munge/munged.pid")
#: CPUs the node advertises at least (profiles/slurm asks up to 4 per job); oversubscribed on purpose.
MIN_CPUS = 8


class SlurmUnavailable(RuntimeError):
    """Slurm or munge is not installed, or we are not root."""


class LocalSlurm:
    """A one-node cluster whose daemons are stopped by PID in `stop`."""

    def __init__(self, base: Path, memory_mb: int = 16000) -> None:
        self.base = base
        self.memory_mb = memory_mb
        self.pids: list[int] = []
        self._saved: dict[Path, bytes | None] = {}

    def start(self) -> None:
        for tool in ("slurmctld", "slurmd", "munged", "sinfo", "squeue"):
            if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
                raise SlurmUnavailable(f"{tool} not found: run scripts/install-system-deps.sh (apt slurm-wlm, munge)")
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmctld/slurmd needs root")
        node = socket.gethostname().split(".")[0]
        (self.base / "state").mkdir(parents=True, exist_ok=True)
        (self.base / "spool").mkdir(parents=True, exist_ok=True)
        values = {
            "@NODE@": node,
            "@NCPU@": str(max(os.cpu_count() or 1, MIN_CPUS)),
            "@BASE@": str(self.base),
            "@MEM@": str(self.memory_mb),
        }
        for src, dst in ((HERE / "slurm.conf.in", SLURM_CONF), (HERE / "gres.conf.in", GRES_CONF)):
            text = src.read_text()
            for key, val in values.items():
                text = text.replace(key, val)
            self._saved[dst] = dst.read_bytes() if dst.exists() else None
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(text)
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        if not _alive(MUNGE_PID):
            subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
        self._wait_file(MUNGE_PID)
        self.pids.append(int(MUNGE_PID.read_text()))
        subprocess.run(["slurmctld", "-i"], check=True)
        subprocess.run(["slurmd"], check=True)
        for name in ("slurmctld.pid", "slurmd.pid"):
            self._wait_file(self.base / name)
            self.pids.append(int((self.base / name).read_text()))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout.strip()
            if state == "idle":
                return
            if state in ("drain", "inval", "down"):
                subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=False)
            time.sleep(0.5)
        raise RuntimeError(f"Slurm node did not become idle; see {self.base}/slurmctld.log and slurmd.log")

    @staticmethod
    def _wait_file(path: Path, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not (path.exists() and path.read_text().strip()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} did not appear")
            time.sleep(0.1)

    def stop(self) -> None:
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        self.pids.clear()
        for dst, content in self._saved.items():
            if content is None:
                dst.unlink(missing_ok=True)
            else:
                dst.write_bytes(content)


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text()), 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    return True
