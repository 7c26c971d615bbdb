"""A newcomer's first hour: a read-only home, a busy port, an unknown resource, a failed backup's point,
and listings at 80 columns — each one line and a documented exit code, or output a person can read."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.cli import Cli, assert_one_line_error
from tests.support.trees import snapshot_tree


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("first\n")
    cli.run("resources", "add", "clinic-documents", "--type", "directory", "--path", str(tree))
    return cli


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` unwritable for this process: a read-only bind mount as root (chmod does not stop root),
    mode 0500 otherwise."""
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot bind-mount as root here: {mounted.stderr.decode().strip()}")
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
            yield
        finally:
            subprocess.run(["umount", str(path)], check=True)
        return
    mode = path.stat().st_mode
    path.chmod(0o500)
    try:
        yield
    finally:
        path.chmod(mode)


def test_read_only_home_is_one_line_for_every_kind_of_command(cli: Cli) -> None:
    with read_only(cli.home):
        assert not os.access(cli.home, os.W_OK)
        for args in (("vaults", "list"), ("recovery-points", "list"), ("backup", "start", "--resource", "x")):
            result = cli.run(*args, ok=False)
            assert_one_line_error(result, 3, f"cannot open the account's catalog in {cli.home}", "writable")


def test_serve_on_a_busy_port_says_so_and_never_says_serving(cli: Cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli.run("serve", "--no-scheduler", "--port", str(port), ok=False)
    assert_one_line_error(result, 2, f"cannot listen on 127.0.0.1:{port}", "in use", "--port")
    assert "serving on" not in result.stdout


def test_serve_on_port_0_says_which_port_it_bound(cli: Cli) -> None:
    process = subprocess.Popen(
        cli.command("serve", "--no-scheduler", "--port", "0"),
        env=cli.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once bound: nothing to wait for after it
        assert " serving on http://127.0.0.1:" in line, line
        port = int(line.rsplit(":", 1)[1])
        assert port != 0
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    finally:
        process.terminate()
        process.communicate(timeout=60)
    assert process.returncode == 0


@pytest.mark.parametrize("port", ["70000", "65536", "-1"])
def test_serve_port_out_of_range(cli: Cli, port: str) -> None:
    assert_one_line_error(cli.run("serve", "--port", port, ok=False), 2, "--port")


def test_recovery_points_of_an_unknown_resource(cli: Cli) -> None:
    result = cli.run("recovery-points", "list", "--resource", "nope", ok=False)
    assert_one_line_error(result, 2, "resource 'nope' does not exist")
    assert cli.json("recovery-points", "list", "--resource", "clinic-documents") == {"recovery_points": []}


def test_a_failed_backups_point_is_never_the_latest(cli: Cli, tmp_path: Path) -> None:
    """README: ARN=$(… recovery-points list --resource clinic --json | jq -r '.recovery_points[-1]…')."""
    good = cli.backup("clinic-documents")["recovery_point_arn"]
    (tmp_path / "tree" / "b.txt").write_text("second\n")
    failed = cli.run(
        "backup", "start", "--resource", "clinic-documents", "--wait", ok=False,
        env={"STRONGROOM_FAULT_KILL_AT": "write:before-manifest"},
    )  # fmt: skip
    assert failed.returncode < 0  # killed
    every = cli.json("recovery-points", "list", "--all", "--resource", "clinic-documents")["recovery_points"]
    assert [p["status"] for p in every] == ["COMPLETED", "PARTIAL"]

    latest = cli.json("recovery-points", "list", "--resource", "clinic-documents")["recovery_points"][-1]
    assert latest["recovery_point_arn"] == good
    assert "PARTIAL" not in cli.run("recovery-points", "list").stdout
    partial = cli.json("recovery-points", "list", "--status", "partial")["recovery_points"]
    assert [p["recovery_point_arn"] for p in partial] == [every[1]["recovery_point_arn"]]
    target = tmp_path / "restored"
    cli.run("restore", "start", "--recovery-point", latest["recovery_point_arn"], "--target", str(target), "--wait")
    assert snapshot_tree(target) != {} and (target / "a.txt").read_text() == "first\n"
    assert_one_line_error(cli.run("recovery-points", "list", "--all", "--status", "partial", ok=False), 2, "--all")


def test_listings_fit_80_columns_and_arns_stay_recoverable(cli: Cli) -> None:
    for _ in range(2):
        cli.backup("clinic-documents")
    narrow = {"COLUMNS": "80"}
    arns = [p["recovery_point_arn"] for p in cli.json("recovery-points", "list")["recovery_points"]]
    vault_arn = cli.json("vaults", "list")["backup_vaults"][0]["backup_vault_arn"]
    for args in (
        ("recovery-points", "list"),
        ("jobs", "list"),
        ("vaults", "list"),
        ("resources", "list"),
        ("credentials", "list"),
        ("secrets", "list"),
        ("dr", "list"),
    ):
        shown = cli.run(*args, env=narrow).stdout
        too_wide = [line for line in shown.splitlines() if len(line) > 80]
        assert not too_wide, (args, too_wide)
        assert "…" not in shown, shown  # nothing cut short with an ellipsis: folded or shortened on purpose
    listed = cli.run("recovery-points", "list", env=narrow).stdout
    for arn in arns:
        assert arn.rsplit(":", 1)[-1] in listed  # the id, which every command takes for the ARN
    assert "--wide or --json shows them whole" in listed
    wide = cli.run("recovery-points", "list", "--wide", env=narrow).stdout
    assert all(arn in wide for arn in arns)
    assert vault_arn in cli.run("vaults", "list", "--wide", env=narrow).stdout
    point = cli.json("recovery-points", "describe", "--recovery-point", arns[0].rsplit(":", 1)[-1])
    assert point["recovery_point_arn"] == arns[0]


def test_a_long_message_folds_at_80_columns(cli: Cli, tmp_path: Path) -> None:
    tree = tmp_path / ("a-directory-with-a-rather-long-name-" * 3)
    tree.mkdir()
    cli.run("resources", "add", "long", "--type", "directory", "--path", str(tree))
    tree.rmdir()
    assert cli.run("backup", "start", "--resource", "long", "--wait", ok=False).returncode == 4
    shown = cli.run("jobs", "list", env={"COLUMNS": "80"}).stdout
    assert all(len(line) <= 80 for line in shown.splitlines()), shown
    message = cli.json("jobs", "list")["jobs"][-1]["status_message"]
    assert " ".join(message.split())[:40] in " ".join(shown.split()), (message, shown)
