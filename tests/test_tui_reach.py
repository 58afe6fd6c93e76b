"""A server that cannot be reached says so, in the error colour, on the dashboard and on its
own screen: a closed port on 127.0.0.1, and the real sshd with a changed host key or a key it
does not accept (before, each looked "idle" with a grey "free space unknown")."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from rich.text import Text
from textual.widgets import DataTable, Label

from tests.harness import SshServer
from tests.test_tui_support import wait_for, write_inventory
from tui.app.app import ServerMoveApp
from tui.app.screens.server_detail import ServerDetailScreen
from tui.core.fleet import Fleet
from tui.core.inventory import ServerEntry
from tui.core.ssh import SshSettings


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def new_key(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def ssh_config(sshd: SshServer, tmp_path: Path) -> Path:
    """Aliases for the real sshd: `fine`, `changed` (known_hosts holds another key for it) and
    `noauth` (a client key the server does not accept)."""
    other = " ".join(new_key(tmp_path / "other-host-key").with_suffix(".pub").read_text()
                     .split()[:2])
    wrong_known_hosts = tmp_path / "known_hosts_changed"
    wrong_known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    fine = sshd.write_config(tmp_path / "fine", alias="fine").read_text()
    changed = sshd.write_config(tmp_path / "changed", alias="changed",
                                known_hosts=wrong_known_hosts).read_text()
    noauth = sshd.write_config(tmp_path / "noauth", alias="noauth").read_text().replace(
        str(sshd.client_key), str(new_key(tmp_path / "stranger")))
    config = tmp_path / "ssh_config"
    config.write_text(fine + changed + noauth)
    return config


def status(app: ServerMoveApp, name: str) -> Text:
    return app.screen.query_one(DataTable).get_cell(name, "status")


async def test_unreachable_servers_say_why(sshd: SshServer, tmp_path: Path) -> None:
    servers = [ServerEntry("gone", f"127.0.0.1:{closed_port()}", "/srv/data"),
               ServerEntry("changed", "changed", "/tmp"),
               ServerEntry("noauth", "noauth", "/tmp"),
               ServerEntry("fine", "fine", "/tmp")]
    fleet = Fleet(settings=SshSettings(config_files=[ssh_config(sshd, tmp_path)]))
    app = ServerMoveApp(inventory_path=write_inventory(tmp_path, servers), fleet=fleet,
                        ssh_aliases=[])
    expected = {"gone": "unreachable", "changed": "host key changed", "noauth": "auth failed"}
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(pilot, lambda: all(str(status(app, name)) == text
                                          for name, text in expected.items()),
                       timeout=60, what="every server's connection checked")
        for name in expected:
            assert status(app, name).style == "red"
        assert str(status(app, "fine")) == "idle"  # reached: nothing to say

        app.open_server("changed")
        await wait_for(pilot, lambda: isinstance(app.screen, ServerDetailScreen))
        await pilot.pause()
        line = app.screen.query_one("#current-free", Label)
        await wait_for(pilot, lambda: str(line.render()).startswith("host key changed: "),
                       timeout=30, what="the server screen's status")
        assert "has CHANGED" in str(line.render()) and line.has_class("-problem")
